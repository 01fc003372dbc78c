/*
 * qa_notify Web Push on the preferences page: subscribe this browser (service worker /sw.js,
 * PushManager.subscribe with the site's VAPID key), list the user's devices, remove one.
 *
 * The browser asks for notification permission only when "Turn on" is clicked. The device
 * list comes from GET /api/push/subscriptions; this browser's own row is remembered by its id
 * (localStorage), so removing it also unsubscribes here. Text is inserted with textContent.
 */
(function () {
  "use strict";

  var card = document.getElementById("push-notifications");
  var body = document.body;
  if (!card || !body.dataset.userId) return;

  var csrf = body.dataset.csrf || "";
  var OWN_KEY = "qa-notify:" + body.dataset.userId + ":push-subscription-id";
  var status = card.querySelector(".push-status");
  var enableButton = card.querySelector('[data-action="push-enable"]');
  var disableButton = card.querySelector('[data-action="push-disable"]');
  var list = card.querySelector(".push-devices");
  var empty = card.querySelector(".push-empty");
  var supported = "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
  var text = card.dataset; // the card's words, in the reader's language (data-text-*)

  function ownId() {
    try {
      return localStorage.getItem(OWN_KEY);
    } catch (e) {
      return null;
    }
  }

  function setOwnId(id) {
    try {
      if (id === null) localStorage.removeItem(OWN_KEY);
      else localStorage.setItem(OWN_KEY, String(id));
    } catch (e) {
      /* private mode: the list still works, only "this device" is not marked */
    }
  }

  function api(method, path, payload) {
    var options = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") options.headers["X-CSRFToken"] = csrf;
    if (payload !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(payload);
    }
    return fetch(path, options).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) throw new Error(data && data.error ? data.error : "HTTP " + response.status);
        return data;
      });
    });
  }

  function show(state, message) {
    card.dataset.state = state;
    status.textContent = message;
    enableButton.hidden = !(state === "off" || state === "error");
    disableButton.hidden = state !== "on";
  }

  function base64UrlToBytes(text) {
    var padded = (text + "===".slice((text.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(padded);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function registration() {
    return navigator.serviceWorker.register("/sw.js", { scope: "/" }).then(function () {
      return navigator.serviceWorker.ready;
    });
  }

  function describeDevice(device) {
    var agent = device.user_agent || text.textUnknownBrowser;
    var match = /(Firefox|Edg|Chrome|Safari)\/[\d.]+/.exec(agent);
    return (match ? match[0].replace("Edg", "Edge") : agent.slice(0, 60)) + " " + text.textVia + " " + (device.endpoint_host || "?");
  }

  function renderDevices(devices) {
    list.textContent = "";
    empty.hidden = devices.length > 0;
    var own = ownId();
    devices.forEach(function (device) {
      var item = document.createElement("li");
      item.className = "push-device";
      item.dataset.id = String(device.id);
      var name = document.createElement("span");
      name.className = "push-device-name";
      name.textContent = describeDevice(device) + (String(device.id) === own ? " " + text.textThisBrowser : "");
      var when = document.createElement("span");
      when.className = "hint";
      when.textContent =
        " " + text.textAdded + " " + device.created_at.slice(0, 10) +
        (device.last_used_at ? ", " + text.textLastPush + " " + device.last_used_at.slice(0, 16).replace("T", " ") + " UTC" : "");
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "button secondary small";
      remove.dataset.action = "push-remove";
      remove.textContent = text.textRemove;
      remove.addEventListener("click", function () {
        removeDevice(String(device.id));
      });
      item.append(name, when, " ", remove);
      list.appendChild(item);
    });
    return devices;
  }

  function refresh() {
    return api("GET", "/api/push/subscriptions").then(function (data) {
      renderDevices(data.subscriptions);
      var own = ownId();
      var listed = data.subscriptions.some(function (d) {
        return String(d.id) === own;
      });
      if (!supported) show("unsupported", text.textUnsupported);
      else if (Notification.permission === "denied") show("denied", text.textDenied);
      else if (listed) show("on", text.textOn);
      else show("off", text.textOff);
    });
  }

  function unsubscribeHere() {
    if (!supported) return Promise.resolve();
    return navigator.serviceWorker.getRegistration("/").then(function (reg) {
      return reg ? reg.pushManager.getSubscription() : null;
    }).then(function (subscription) {
      return subscription ? subscription.unsubscribe() : false;
    });
  }

  function removeDevice(id) {
    var mine = id === ownId();
    return api("DELETE", "/api/push/subscriptions/" + encodeURIComponent(id))
      .then(function () {
        if (mine) {
          setOwnId(null);
          return unsubscribeHere();
        }
      })
      .then(refresh)
      .catch(function (error) {
        show("error", text.textRemoveFailed + " " + error.message);
      });
  }

  function enable() {
    show("working", text.textWorking);
    Promise.resolve(Notification.requestPermission())
      .then(function (permission) {
        if (permission !== "granted") throw new Error(text.textNotAllowed);
        return Promise.all([registration(), api("GET", "/api/push/key")]);
      })
      .then(function (both) {
        return both[0].pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: base64UrlToBytes(both[1].public_key) });
      })
      .then(function (subscription) {
        return api("POST", "/api/push/subscriptions", subscription.toJSON());
      })
      .then(function (device) {
        setOwnId(device.id);
        return refresh();
      })
      .catch(function (error) {
        show("error", text.textEnableFailed + " " + error.message);
      });
  }

  enableButton.addEventListener("click", enable);
  disableButton.addEventListener("click", function () {
    var own = ownId();
    if (own) removeDevice(own);
  });
  refresh().catch(function (error) {
    show("error", text.textLoadFailed + " " + error.message);
  });
})();
