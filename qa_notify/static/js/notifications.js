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
 * Every event id is the stream's position in the user's own stream and in the broadcast
 * stream (an announcement is written once for everyone): "<user id>~<broadcast id>". The
 * page keeps it as an opaque string (last id, de-duplication) and only reads a time from it.
 * A broadcast carries no notification_id (it has no group): the badge counts it at once.
 *
 * The stream is opened with ?catch_all=1: the site's types come as named events (the page
 * listens for each by name), any other service's type as an unnamed message
 * {"type", "data"}, so the page shows types it has never heard of.
 *
 * Events of one group (payload `group`: the answers to one question, say) that arrive while
 * the group's toast is up update that toast ("bob and 4 others answered ...", with a count)
 * instead of stacking new ones; each event still has its own id, relay and de-duplication.
 *
 * Which tab shows a toast: the tab the user last focused (tabs announce focus on the
 * channel); if that tab is gone or none was focused yet, the leader shows it. When every
 * tab is hidden and the user turned desktop notifications on (the preferences page, stored
 * in this browser), the leader alone shows an OS notification instead.
 * Text from events is always inserted with textContent, never as HTML.
 */
(function () {
  "use strict";

  var body = document.body;
  var userId = body.dataset.userId;
  if (!userId) return;

  var STREAM_URL = body.dataset.streamUrl || "/notifications";
  // The inbox types the page names in addEventListener; every other type arrives unnamed.
  var NAMED_TYPES = ["new_answers", "new_question", "broadcast", "mention"];
  var CONTROL_TYPES = ["read", "preferences", "quiet", "resync", "server_closed"];
  var LAST_ID_KEY = "qa-notify:" + userId + ":last-event-id";
  var DESKTOP_KEY = "qa-notify:" + userId + ":desktop";
  var TOAST_MS = 6000; // a toast's life, renewed by each event of its group
  var MAX_TOASTS = 5;
  var MAX_ACTORS = 3;
  var MAX_KNOWN = 500; // ids, groups and bursts remembered per tab
  var STALE_MS = 5 * 60 * 1000; // replay older than this updates the badge but shows no toast

  var tabId = Math.random().toString(36).slice(2) + Date.now().toString(36);
  var channel = "BroadcastChannel" in window ? new BroadcastChannel("qa-notify:" + userId) : null;
  var canElect = !!(channel && navigator.locks && navigator.locks.request);
  var isLeader = false;
  var focusedTab = null;
  var otherTabsVisible = new Map(); // tab id -> whether that tab is visible
  var signedOut = false;
  var seen = [];
  var seenSet = new Set();
  var source = null;
  var retryDelay = 1000;
  // The inbox's words in the reader's language (notifications/wording.py: page_words), filled
  // in here exactly as its describe() fills them, so a toast reads like its inbox item.
  var WORDS = {};
  try { WORDS = JSON.parse(body.dataset.words || "{}"); } catch (e) { WORDS = {}; }
  var pluralRules = window.Intl && Intl.PluralRules ? new Intl.PluralRules(document.documentElement.lang || "en") : null;
  // The types whose in-app channel the user turned off (Preferences): counted, never toasted.
  var silent = new Set((body.dataset.silent || "").split(" ").filter(Boolean));

  // ---- small helpers -------------------------------------------------------------------

  function remember(id) {
    if (!id) return true;
    if (seenSet.has(id)) return false;
    seenSet.add(id);
    seen.push(id);
    if (seen.length > MAX_KNOWN) seenSet.delete(seen.shift());
    return true;
  }

  // Set a key of a Map that forgets its oldest entries past MAX_KNOWN.
  function setBounded(map, key, value) {
    map.delete(key);
    map.set(key, value);
    if (map.size > MAX_KNOWN) map.delete(map.keys().next().value);
  }

  // When an event was written: an id is a position "<user stream id>~<broadcast stream id>"
  // (either half may be missing; an old id is a user stream id alone), each half "<ms>-<seq>".
  // The newer half is the event the frame carries.
  function eventTime(id) {
    var newest = NaN;
    String(id || "").split("~").forEach(function (half) {
      var ms = parseInt(half.split("-")[0], 10);
      if (!isNaN(ms) && !(ms <= newest)) newest = ms;
    });
    return isNaN(newest) ? Date.now() : newest;
  }

  function sitePath(url) {
    return typeof url === "string" && url.charAt(0) === "/" && url.charAt(1) !== "/" && url.indexOf("\\") < 0 ? url : null;
  }

  function text(value) {
    return typeof value === "string" ? value : "";
  }

  // The group an event joins ("new_answers" + "new_answers:question:5"), or null: its own.
  function groupOf(type, data) {
    return typeof data.group === "string" && data.group ? type + " " + data.group : null;
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

  function isVisible() {
    return document.visibilityState !== "hidden";
  }

  function anyTabVisible() {
    if (isVisible()) return true;
    var visible = false;
    otherTabsVisible.forEach(function (v) { visible = visible || v; });
    return visible;
  }

  function announceVisibility() {
    post({ kind: "visibility", tab: tabId, visible: isVisible() });
  }

  // ---- the badge: unread groups --------------------------------------------------------

  function setStatus(state) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.dataset.state = state;
    el.textContent = (WORDS.status && WORDS.status[state]) || state;
  }

  function badge() {
    return document.getElementById("unread-badge");
  }

  function badgeCount() {
    var el = badge();
    return el ? parseInt(el.dataset.count, 10) || 0 : 0;
  }

  function setBadge(count) {
    var el = badge();
    if (!el || typeof count !== "number" || count < 0) return;
    el.dataset.count = String(count);
    el.textContent = String(count);
  }

  // What this page knows of groups: "unread" (an event came, no read since) or "read".
  var groupState = new Map();
  var groupOfPart = new Map(); // notification id -> group, to know which groups a read covered

  // The badge counts unread groups. An event of a group known unread changes nothing; one of
  // a new group (none unread, or its group was read here) is +1 at once; one of a group this
  // page cannot place waits for the leader's re-read of the server's count (scheduleRefresh).
  function countEvent(type, data) {
    var group = groupOf(type, data);
    if (!group) { setBadge(badgeCount() + 1); return; }
    if (typeof data.notification_id === "number") setBounded(groupOfPart, String(data.notification_id), group);
    var before = groupState.get(group);
    setBounded(groupState, group, "unread");
    if (before === "read" || (before === undefined && badgeCount() === 0)) setBadge(badgeCount() + 1);
  }

  function forgetReadGroups(data) {
    if (data.all) {
      groupState.forEach(function (state, group) { groupState.set(group, "read"); });
      return;
    }
    (data.ids || []).forEach(function (id) {
      var group = groupOfPart.get(String(id));
      if (group) groupState.set(group, "read");
    });
  }

  function shareGroups() {
    post({ kind: "groups", groups: Array.from(groupState.entries()), parts: Array.from(groupOfPart.entries()) });
  }

  function learnGroups(m) {
    (m.parts || []).forEach(function (p) { if (!groupOfPart.has(p[0])) setBounded(groupOfPart, p[0], p[1]); });
    (m.groups || []).forEach(function (g) { if (!groupState.has(g[0])) setBounded(groupState, g[0], g[1]); });
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

  // The leader checks the server's count once a burst ends, so replays after a reconnect or
  // an event of a group this page had not seen can never leave the badge off.
  function scheduleRefresh() {
    if (!isLeader) return;
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshUnread, 800);
  }

  function markInboxItemsRead(data) {
    var items = document.querySelectorAll("li.notification[data-id]");
    var ids = new Set((data.ids || []).map(String));
    items.forEach(function (item) {
      if (data.all || ids.has(item.dataset.id)) item.classList.toggle("unread", !!data.unread);
    });
  }

  // "Mark unread" (a read event with unread: true): those groups count as unread again, so
  // their next event leaves the badge alone.
  function markGroupsUnread(data) {
    (data.ids || []).forEach(function (id) {
      var group = groupOfPart.get(String(id));
      if (group) groupState.set(group, "unread");
    });
  }

  // ---- bursts: the events of one group shown together ----------------------------------

  var bursts = new Map(); // group (or the event's own id) -> {count, actors, people, data, ...}

  // Add an event to its group's burst; a group quiet for a toast's life starts a new one.
  function joinBurst(type, id, data) {
    var key = groupOf(type, data) || type + " id:" + id;
    var burst = bursts.get(key);
    var now = Date.now();
    if (!burst || now - burst.lastAt > TOAST_MS) {
      burst = { key: key, type: type, count: 0, actors: [], people: new Set(), toast: null };
    }
    setBounded(bursts, key, burst);
    var actor = text(data.author);
    if (actor) {
      burst.people.add(actor);
      burst.actors = [actor].concat(burst.actors.filter(function (a) { return a !== actor; })).slice(0, MAX_ACTORS);
    }
    burst.count += 1;
    burst.lastAt = now;
    burst.id = id;
    burst.data = data;
    return burst;
  }


  function fill(template, values) {
    return String(template || "").replace(/%\((\w+)\)[sd]/g, function (m, name) {
      return Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : m;
    });
  }

  function plural(forms, n, values) {
    var form = pluralRules ? pluralRules.select(n) : (n === 1 ? "one" : "other");
    var chosen = forms && (forms[form] || forms.other);
    values.num = n;
    return fill(chosen, values);
  }

  // "bob", "bob and alice", "bob and 4 others".
  function who(actors, actorCount) {
    if (!actors.length) return WORDS.someone || "Someone";
    var total = Math.max(actorCount, actors.length);
    if (total === 1) return actors[0];
    if (total === 2 && actors.length === 2) return fill(WORDS.two, { first: actors[0], second: actors[1] });
    return plural(WORDS.others, total - 1, { first: actors[0] });
  }

  // The title and body of a burst, worded as its inbox item is.
  function describe(burst) {
    var type = burst.type, data = burst.data, count = burst.count;
    var people = who(burst.actors, burst.people.size);
    var described;
    if (type === "new_answers") {
      described = { title: fill(WORDS.answered, { people: people, title: text(data.question_title) }), body: count > 1 ? plural(WORDS.answers, count, {}) : text(data.excerpt) };
    } else if (type === "mention") {
      described = { title: fill(WORDS.mentioned, { people: people, title: text(data.question_title) }), body: count > 1 ? plural(WORDS.mentions, count, {}) : text(data.excerpt) };
    } else if (type === "new_question") {
      var topics = Array.isArray(data.topics) ? data.topics.filter(function (t) { return typeof t === "string"; }) : [];
      described = { title: fill(WORDS.asked, { people: people, title: text(data.title) }), body: topics.length ? fill(WORDS.in_topics, { topics: topics.join(WORDS.list_separator || ", ") }) : "" };
    } else if (type === "broadcast") {
      described = { title: data.author ? fill(WORDS.announcement_from, { author: text(data.author) }) : WORDS.announcement, body: text(data.message) };
    } else {
      // Another service's type: its name and whatever text it gave.
      var said = text(data.text) || text(data.title) || text(data.message);
      described = { title: said ? fill(WORDS.typed, { type: type, text: said }) : type, body: count > 1 ? plural(WORDS.events, count, {}) : "" };
    }
    // An event another service sent says so, whatever type it uses (the server sets `source`).
    if (text(data.source)) described.body = (described.body ? described.body + " " : "") + fill(WORDS.via, { source: text(data.source) });
    described.url = sitePath(data.url);
    return described;
  }

  // ---- toasts --------------------------------------------------------------------------

  function fillToast(toast, burst) {
    var described = describe(burst);
    toast.dataset.count = String(burst.count);
    toast.textContent = "";
    var title = document.createElement("div");
    title.className = "toast-title";
    var label = described.url ? document.createElement("a") : document.createElement("span");
    if (described.url) label.href = described.url;
    label.textContent = described.title;
    title.appendChild(label);
    if (burst.count > 1) {
      var count = document.createElement("span");
      count.className = "toast-count";
      count.title = burst.count + " notifications";
      count.textContent = String(burst.count);
      title.appendChild(count);
    }
    toast.appendChild(title);
    if (described.body) {
      var bodyEl = document.createElement("div");
      bodyEl.className = "toast-body";
      bodyEl.textContent = described.body;
      toast.appendChild(bodyEl);
    }
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", WORDS.dismiss || "Dismiss");
    close.textContent = "\u00d7";
    close.addEventListener("click", function (e) { e.stopPropagation(); dismissToast(toast); });
    toast.appendChild(close);
    toast.dataset.url = described.url || "";
    document.dispatchEvent(new CustomEvent("qa:toast", { detail: { toast: toast, data: burst.data } })); // watch.js
  }

  function dismissToast(toast) {
    clearTimeout(toast.dismissTimer);
    toast.classList.add("leaving");
    setTimeout(function () { toast.remove(); }, 250);
  }

  // Show a burst: update its toast while that is up, else a new toast.
  function showToast(burst) {
    var box = document.getElementById("toasts");
    if (!box) return;
    var toast = burst.toast;
    if (!toast || !toast.isConnected || toast.classList.contains("leaving")) {
      toast = document.createElement("div");
      toast.className = "toast";
      toast.dataset.type = burst.type;
      toast.setAttribute("role", "status");
      toast.addEventListener("click", function () { if (toast.dataset.url) window.location.href = toast.dataset.url; });
      burst.toast = toast;
      box.appendChild(toast);
    }
    fillToast(toast, burst);
    while (box.children.length > MAX_TOASTS) box.removeChild(box.firstChild);
    clearTimeout(toast.dismissTimer);
    toast.dismissTimer = setTimeout(function () { dismissToast(toast); }, TOAST_MS);
  }

  function shouldToast() {
    if (!canElect) return isVisible();
    if (focusedTab) return focusedTab === tabId;
    return isLeader;
  }

  // ---- desktop notifications -----------------------------------------------------------

  function desktopSupported() {
    return "Notification" in window;
  }

  function desktopOptedIn() {
    try { return localStorage.getItem(DESKTOP_KEY) === "on"; } catch (e) { return false; }
  }

  function desktopWanted() {
    return desktopSupported() && Notification.permission === "granted" && desktopOptedIn();
  }

  // One OS notification per burst: a later event of the group replaces it (same tag).
  function showDesktop(burst) {
    var described = describe(burst);
    var notice;
    try {
      notice = new Notification(described.title, { body: described.body, tag: "qa-notify:" + burst.key });
    } catch (e) {
      return false; // a browser that only notifies from a service worker: toast instead
    }
    notice.addEventListener("click", function () {
      window.focus();
      notice.close();
      if (described.url) window.location.href = described.url;
    });
    return true;
  }

  // The preferences page's card: this browser's choice, asked for only on a click.
  function setUpDesktopCard() {
    var card = document.getElementById("desktop-notifications");
    if (!card) return;
    var status = card.querySelector(".desktop-status");
    var enable = card.querySelector('[data-action="enable"]');
    var disable = card.querySelector('[data-action="disable"]');
    var messages = WORDS.desktop || {};

    function state() {
      if (!desktopSupported()) return "unsupported";
      if (Notification.permission === "denied") return "denied";
      return desktopWanted() ? "on" : "off";
    }

    function render() {
      var now = state();
      card.dataset.state = now;
      status.textContent = messages[now];
      enable.hidden = now !== "off";
      disable.hidden = now !== "on";
    }

    enable.addEventListener("click", function () {
      var answered = false;
      function answer(permission) {
        if (answered) return;
        answered = true;
        try { if (permission === "granted") localStorage.setItem(DESKTOP_KEY, "on"); } catch (e) { /* private mode */ }
        render();
      }
      var asked = Notification.requestPermission(answer); // older Safari: callback only
      if (asked && typeof asked.then === "function") asked.then(answer, function () { answer("default"); });
    });
    disable.addEventListener("click", function () {
      try { localStorage.removeItem(DESKTOP_KEY); } catch (e) { /* private mode */ }
      render();
    });
    window.addEventListener("storage", function (e) { if (e.key === DESKTOP_KEY) render(); });
    render();
  }

  function becomeSignedOut(tellOthers) {
    if (signedOut) return;
    signedOut = true;
    if (source) { source.close(); source = null; }
    setStatus("signed-out");
    if (tellOthers) post({ kind: "signed-out" });
  }

  // ---- one event, in every tab ---------------------------------------------------------

  function silenced(type) {
    return silent.has(NAMED_TYPES.indexOf(type) >= 0 ? type : "producers");
  }

  function handle(type, id, data) {
    if (!remember(id)) return;
    if (type === "preferences") {
      silent = new Set(Array.isArray(data.silent) ? data.silent : []);
    } else if (type === "read") {
      if (data.unread) markGroupsUnread(data); else forgetReadGroups(data);
      setBadge(data.unread_count);
      markInboxItemsRead(data);
    } else if (type === "quiet") {
      if (window.qaNotifyQuiet) window.qaNotifyQuiet.update(data); // js/quiet.js: the server's word
    } else if (type === "resync") {
      refreshUnread();
    } else if (type === "server_closed") {
      becomeSignedOut(false);
    } else {
      countEvent(type, data);
      scheduleRefresh();
      if (Date.now() - eventTime(id) < STALE_MS && !silenced(type)) present(joinBurst(type, id, data));
    }
  }

  // A toast in the tab the user looks at, or, with every tab hidden and desktop
  // notifications on, one OS notification from the leader.
  function present(burst) {
    if (window.qaNotifyQuiet && window.qaNotifyQuiet.isQuiet()) return; // snoozed or quiet hours
    // watch.js cancels it for a question just muted in this browser (the event was in flight).
    if (!document.dispatchEvent(new CustomEvent("qa:present", { cancelable: true, detail: burst.data }))) return;
    if (!anyTabVisible() && desktopWanted()) {
      if ((isLeader || !canElect) && !showDesktop(burst)) showToast(burst);
      return;
    }
    if (shouldToast()) showToast(burst);
  }

  // ---- the leader's connection ---------------------------------------------------------

  function relay(type, id, data) {
    if (id) writeLastId(id);
    post({ kind: "event", type: type, id: id || null, data: data });
    if (type === "server_closed") post({ kind: "signed-out" });
    handle(type, id || null, data);
  }

  function connect() {
    if (signedOut) return;
    var lastId = readLastId();
    if (lastId && Date.now() - eventTime(lastId) > 24 * 3600 * 1000) lastId = null; // start fresh
    var url = STREAM_URL + "?catch_all=1" + (lastId ? "&last_event_id=" + encodeURIComponent(lastId) : "");
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
    NAMED_TYPES.concat(CONTROL_TYPES).forEach(function (type) {
      source.addEventListener(type, function (ev) {
        var data;
        try { data = JSON.parse(ev.data || "{}"); } catch (e) { return; }
        if (data && typeof data === "object") relay(type, ev.lastEventId, data);
      });
    });
    // Any other type: {"type": "deploy", "data": {...}} (only the stream itself sends control types).
    source.addEventListener("message", function (ev) {
      var message;
      try { message = JSON.parse(ev.data || "{}"); } catch (e) { return; }
      if (!message || typeof message.type !== "string" || !message.type || CONTROL_TYPES.indexOf(message.type) >= 0) return;
      if (message.data && typeof message.data === "object") relay(message.type, ev.lastEventId, message.data);
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
      if (m.kind === "event") handle(m.type, m.id, m.data || {});
      else if (m.kind === "status" && !isLeader && !signedOut) setStatus(m.state);
      else if (m.kind === "signed-out") becomeSignedOut(false);
      else if (m.kind === "count") setBadge(m.n);
      else if (m.kind === "focus") focusedTab = m.tab;
      else if (m.kind === "focused" && !focusedTab) focusedTab = m.tab; // a newcomer's own claim wins
      else if (m.kind === "visibility") otherTabsVisible.set(m.tab, !!m.visible);
      else if (m.kind === "groups") learnGroups(m);
      else if (m.kind === "bye") {
        otherTabsVisible.delete(m.tab);
        if (focusedTab === m.tab) focusedTab = null;
      } else if (m.kind === "hello") {
        announceVisibility();
        if (isLeader && source) {
          post({ kind: "status", state: source.readyState === EventSource.OPEN ? "live" : "reconnecting" });
          if (focusedTab) post({ kind: "focused", tab: focusedTab });
          shareGroups();
        }
      }
    });
  }

  function claimFocus() {
    focusedTab = tabId;
    post({ kind: "focus", tab: tabId });
  }

  window.addEventListener("focus", claimFocus);
  document.addEventListener("visibilitychange", function () {
    announceVisibility();
    if (isVisible() && document.hasFocus()) claimFocus();
  });
  window.addEventListener("pagehide", function () {
    post({ kind: "bye", tab: tabId });
    if (source) source.close();
  });

  setUpDesktopCard();
  if (canElect) {
    setStatus("reconnecting");
    post({ kind: "hello" });
    announceVisibility();
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
