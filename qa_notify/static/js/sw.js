/*
 * qa_notify service worker (served at /sw.js, scope /): shows Web Push notifications while no
 * tab of the site is open, and brings the question forward when one is clicked.
 *
 * A push is JSON {title, body, url, tag, count, type} (qa_notify/push/payload.py). One
 * notification per group: its tag is "qa-notify:<type> <group>", the tag the page's own
 * desktop notifications give that group, so a later push of the group (or a desktop
 * notification) replaces the earlier one with the new count. Text is only ever given to
 * showNotification as text; only paths on this site are opened.
 */
"use strict";

function sitePath(url) {
  // A path on this site ("/questions/3"), never "//elsewhere" or "https://elsewhere".
  return typeof url === "string" && url.charAt(0) === "/" && url.charAt(1) !== "/" && url.charAt(1) !== "\\"
    ? url
    : "/inbox";
}

function text(value, fallback) {
  return typeof value === "string" && value ? value : fallback;
}

function readPush(event) {
  if (!event.data) return {};
  try {
    var data = event.data.json();
    return data && typeof data === "object" ? data : {};
  } catch (e) {
    return { body: event.data.text() };
  }
}

self.addEventListener("install", function () {
  self.skipWaiting();
});

self.addEventListener("activate", function (event) {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("push", function (event) {
  var data = readPush(event);
  var tag = text(data.tag, "");
  var count = typeof data.count === "number" && data.count > 1 ? data.count : 0;
  var body = text(data.body, "");
  var options = {
    body: body,
    data: { url: sitePath(data.url), count: count, type: text(data.type, "") },
    icon: undefined,
  };
  if (tag) {
    // The tag the page's desktop notifications give the same group (notifications.js: type, group).
    options.tag = "qa-notify:" + (data.type ? text(data.type, "") + " " : "") + tag;
    options.renotify = true; // a new answer in the group should be noticed, not silently swapped in
  }
  event.waitUntil(self.registration.showNotification(text(data.title, "qa_notify"), options));
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = new URL(sitePath(event.notification.data && event.notification.data.url), self.location.origin).href;
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (tabs) {
      for (var i = 0; i < tabs.length; i++) {
        if (tabs[i].url === url && "focus" in tabs[i]) return tabs[i].focus();
      }
      for (var j = 0; j < tabs.length; j++) {
        var tab = tabs[j];
        if (new URL(tab.url).origin === self.location.origin && "navigate" in tab) {
          // Bring the tab forward (the browser may refuse), then take it to the question.
          return tab
            .focus()
            .catch(function () {
              return tab;
            })
            .then(function (focused) {
              return (focused || tab).navigate(url);
            });
        }
      }
      return self.clients.openWindow(url);
    })
  );
});
