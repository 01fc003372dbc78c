/*
 * qa_notify live notifications: one connection per browser, toasts once, a badge that is right.
 *
 * The tabs of one browser elect a leader with the Web Locks API. Only the leader holds the
 * EventSource on /notifications; it relays every event to the other tabs over a
 * BroadcastChannel. When the leader closes, the next tab in the lock queue takes over and
 * reconnects from the last event id (kept in localStorage), so nothing is lost, and every
 * tab drops ids it has already handled, so nothing is shown twice. Without those APIs
 * each tab simply holds its own EventSource.
 *
 * Which tab shows a toast: the tab the user last focused (tabs announce focus on the
 * channel); if that tab is gone or none was focused yet, the leader shows it.
 * Text from events is always inserted with textContent, never as HTML.
 */
(function () {
  "use strict";

  var body = document.body;
  var userId = body.dataset.userId;
  if (!userId) return;

  var STREAM_URL = body.dataset.streamUrl || "/notifications";
  var INBOX_TYPES = ["new_answers", "new_question", "broadcast"];
  var CONTROL_TYPES = ["read", "resync", "server_closed"];
  var LAST_ID_KEY = "qa-notify:" + userId + ":last-event-id";
  var TOAST_MS = 6000;
  var MAX_TOASTS = 5;
  var STALE_MS = 5 * 60 * 1000; // replay older than this updates the badge but shows no toast

  var tabId = Math.random().toString(36).slice(2) + Date.now().toString(36);
  var channel = "BroadcastChannel" in window ? new BroadcastChannel("qa-notify:" + userId) : null;
  var canElect = !!(channel && navigator.locks && navigator.locks.request);
  var isLeader = false;
  var focusedTab = null;
  var signedOut = false;
  var seen = [];
  var seenSet = new Set();
  var source = null;
  var retryDelay = 1000;

  // ---- small helpers -------------------------------------------------------------------

  function remember(id) {
    if (!id) return true;
    if (seenSet.has(id)) return false;
    seenSet.add(id);
    seen.push(id);
    if (seen.length > 500) seenSet.delete(seen.shift());
    return true;
  }

  function eventTime(id) {
    var ms = parseInt(String(id || "").split("-")[0], 10);
    return isNaN(ms) ? Date.now() : ms;
  }

  function sitePath(url) {
    return typeof url === "string" && url.charAt(0) === "/" && url.charAt(1) !== "/" && url.indexOf("\\") < 0 ? url : null;
  }

  function post(message) {
    if (channel) channel.postMessage(message);
  }

  function readLastId() {
    try { return localStorage.getItem(LAST_ID_KEY); } catch (e) { return null; }
  }

  function writeLastId(id) {
    try { if (id) localStorage.setItem(LAST_ID_KEY, id); } catch (e) { /* private mode */ }
  }

  // ---- what the user sees --------------------------------------------------------------

  function setStatus(state) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.dataset.state = state;
    el.textContent = state === "signed-out" ? "signed out" : state;
  }

  function badge() {
    return document.getElementById("unread-badge");
  }

  function setBadge(count) {
    var el = badge();
    if (!el || typeof count !== "number" || count < 0) return;
    el.dataset.count = String(count);
    el.textContent = String(count);
  }

  function bumpBadge() {
    var el = badge();
    if (el) setBadge((parseInt(el.dataset.count, 10) || 0) + 1);
  }

  function refreshUnread() {
    fetch("/api/notifications/unread_count", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (resp) {
        if (resp.status === 401) { becomeSignedOut(true); return null; }
        return resp.ok ? resp.json() : null;
      })
      .then(function (data) {
        if (!data) return;
        setBadge(data.unread_count);
        post({ kind: "count", n: data.unread_count });
      })
      .catch(function () { /* offline: the next event or reconnect fixes it */ });
  }

  var refreshTimer = null;

  // Instant +1 on each event, then the leader checks the server's count once a burst ends,
  // so replays after a reconnect can never leave the badge off.
  function scheduleRefresh() {
    if (!isLeader) return;
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshUnread, 800);
  }

  function markInboxItemsRead(data) {
    var items = document.querySelectorAll("li.notification[data-id]");
    var ids = new Set((data.ids || []).map(String));
    items.forEach(function (item) {
      if (data.all || ids.has(item.dataset.id)) item.classList.remove("unread");
    });
  }

  function toastText(type, data) {
    var text = builtinToastText(type, data);
    // An event another service sent says so, whatever type it uses (the server sets `source`).
    if (typeof data.source === "string" && data.source) text.body = (text.body ? text.body + " " : "") + "(via " + data.source + ")";
    return text;
  }

  function builtinToastText(type, data) {
    if (type === "new_answers") {
      return { title: (data.author || "Someone") + " answered \u201c" + (data.question_title || "") + "\u201d", body: data.excerpt || "" };
    }
    if (type === "new_question") {
      var topics = Array.isArray(data.topics) && data.topics.length ? "in " + data.topics.join(", ") : "";
      return { title: (data.author || "Someone") + " asked \u201c" + (data.title || "") + "\u201d", body: topics };
    }
    return { title: "Announcement from " + (data.author || "the admins"), body: data.message || "" };
  }

  function showToast(type, data) {
    var box = document.getElementById("toasts");
    if (!box) return;
    var text = toastText(type, data);
    var toast = document.createElement("div");
    toast.className = "toast";
    toast.dataset.type = type;
    toast.setAttribute("role", "status");
    var title = document.createElement("div");
    title.className = "toast-title";
    var url = sitePath(data.url);
    if (url) {
      var link = document.createElement("a");
      link.href = url;
      link.textContent = text.title;
      title.appendChild(link);
    } else {
      title.textContent = text.title;
    }
    toast.appendChild(title);
    if (text.body) {
      var bodyEl = document.createElement("div");
      bodyEl.className = "toast-body";
      bodyEl.textContent = text.body;
      toast.appendChild(bodyEl);
    }
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    toast.appendChild(close);

    function dismiss() {
      toast.classList.add("leaving");
      setTimeout(function () { toast.remove(); }, 250);
    }
    close.addEventListener("click", function (e) { e.stopPropagation(); dismiss(); });
    if (url) toast.addEventListener("click", function () { window.location.href = url; });
    box.appendChild(toast);
    while (box.children.length > MAX_TOASTS) box.removeChild(box.firstChild);
    setTimeout(dismiss, TOAST_MS);
  }

  function shouldToast() {
    if (!canElect) return document.visibilityState === "visible";
    if (focusedTab) return focusedTab === tabId;
    return isLeader;
  }

  function becomeSignedOut(tellOthers) {
    if (signedOut) return;
    signedOut = true;
    if (source) { source.close(); source = null; }
    setStatus("signed-out");
    if (tellOthers) post({ kind: "signed-out" });
  }

  // ---- one event, in every tab ---------------------------------------------------------

  function handle(type, id, data) {
    if (!remember(id)) return;
    if (INBOX_TYPES.indexOf(type) >= 0) {
      bumpBadge();
      scheduleRefresh();
      if (Date.now() - eventTime(id) < STALE_MS && shouldToast()) showToast(type, data);
    } else if (type === "read") {
      setBadge(data.unread_count);
      markInboxItemsRead(data);
    } else if (type === "resync") {
      refreshUnread();
    } else if (type === "server_closed") {
      becomeSignedOut(false);
    }
  }

  // ---- the leader's connection ---------------------------------------------------------

  function connect() {
    if (signedOut) return;
    var lastId = readLastId();
    if (lastId && Date.now() - eventTime(lastId) > 24 * 3600 * 1000) lastId = null; // start fresh
    var url = STREAM_URL + (lastId ? "?last_event_id=" + encodeURIComponent(lastId) : "");
    source = new EventSource(url);
    source.addEventListener("open", function () {
      retryDelay = 1000;
      setStatus("live");
      post({ kind: "status", state: "live" });
      refreshUnread();
    });
    source.addEventListener("error", function () {
      if (signedOut) return;
      var closed = source && source.readyState === EventSource.CLOSED;
      setStatus("reconnecting");
      post({ kind: "status", state: "reconnecting" });
      if (closed) {
        // A non-200 answer (401 signed out, 429, 503 while Redis restarts): the browser
        // gives up, so retry ourselves, after checking we are still signed in.
        source = null;
        refreshUnread();
        // Jittered (0.5x-1.5x) so the pages of a restarted server do not return in step.
        setTimeout(connect, retryDelay * (0.5 + Math.random()));
        retryDelay = Math.min(retryDelay * 2, 30000);
      }
    });
    INBOX_TYPES.concat(CONTROL_TYPES).forEach(function (type) {
      source.addEventListener(type, function (ev) {
        var data = {};
        try { data = JSON.parse(ev.data || "{}"); } catch (e) { return; }
        if (ev.lastEventId) writeLastId(ev.lastEventId);
        post({ kind: "event", type: type, id: ev.lastEventId || null, data: data });
        if (type === "server_closed") {
          post({ kind: "signed-out" });
        }
        handle(type, ev.lastEventId || null, data);
      });
    });
  }

  function becomeLeader() {
    isLeader = true;
    connect();
  }

  // ---- the other tabs ------------------------------------------------------------------

  if (channel) {
    channel.addEventListener("message", function (msg) {
      var m = msg.data || {};
      if (m.kind === "event") handle(m.type, m.id, m.data);
      else if (m.kind === "status" && !isLeader && !signedOut) setStatus(m.state);
      else if (m.kind === "signed-out") becomeSignedOut(false);
      else if (m.kind === "count") setBadge(m.n);
      else if (m.kind === "focus") focusedTab = m.tab;
      else if (m.kind === "bye" && focusedTab === m.tab) focusedTab = null;
      else if (m.kind === "hello" && isLeader && source) {
        post({ kind: "status", state: source.readyState === EventSource.OPEN ? "live" : "reconnecting" });
        if (focusedTab === tabId) post({ kind: "focus", tab: tabId });
      }
    });
  }

  function claimFocus() {
    focusedTab = tabId;
    post({ kind: "focus", tab: tabId });
  }

  window.addEventListener("focus", claimFocus);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && document.hasFocus()) claimFocus();
  });
  window.addEventListener("pagehide", function () {
    post({ kind: "bye", tab: tabId });
    if (source) source.close();
  });

  if (canElect) {
    setStatus("reconnecting");
    post({ kind: "hello" });
    if (document.hasFocus()) claimFocus();
    // Held for the life of this tab: the lock passes to the next tab when it closes.
    navigator.locks.request("qa-notify-leader:" + userId, function () {
      becomeLeader();
      return new Promise(function () {});
    });
  } else {
    becomeLeader();
  }
})();
