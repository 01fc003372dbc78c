/*
 * Quiet hours and snooze in the page: whether to toast now, as the server says.
 *
 * The rule lives in Python (qa_notify/quiet.py); this file keeps the server's answer,
 * {quiet, until, next_from}, and asks again when it may change: at `until`, at `next_from`,
 * and when notifications.js relays a live `quiet` event (a snooze from another tab or
 * device). notifications.js asks window.qaNotifyQuiet.isQuiet() before a toast or a desktop
 * notification; the badge and the inbox count as always. It also saves the browser's time
 * zone for a user who has none yet, and wires the preferences page's card.
 */
(function () {
  "use strict";

  var body = document.body;
  if (!body || !body.dataset.userId) return;
  var API = "/api/preferences/quiet";
  var SNOOZE_API = "/api/preferences/snooze";
  var MAX_WAIT_MS = 3600 * 1000; // ask again at least hourly (and never past setTimeout's range)
  var state = null;
  var timer = null;

  function when(iso) {
    var t = iso ? Date.parse(iso) : NaN;
    return isNaN(t) ? null : t;
  }

  function isQuiet() {
    if (!state) return false;
    var now = Date.now();
    var until = when(state.until);
    var next = when(state.next_from);
    if (state.quiet && (until === null || now < until)) return true;
    return next !== null && now >= next; // quiet hours began: the new answer is on its way
  }

  function request(method, url, payload) {
    var options = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") {
      options.headers["X-CSRFToken"] = body.dataset.csrf || "";
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(payload || {});
    }
    return fetch(url, options).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        if (!resp.ok) throw new Error(data && data.error ? data.error : say("failed", String(resp.status)));
        return data;
      });
    });
  }

  function schedule() {
    clearTimeout(timer);
    var now = Date.now();
    var moments = [when(state && state.until), when(state && state.next_from)].filter(function (t) {
      return t !== null && t > now;
    });
    var wait = moments.length ? Math.min.apply(null, moments) - now + 500 : MAX_WAIT_MS;
    timer = setTimeout(refresh, Math.min(wait, MAX_WAIT_MS));
  }

  // A full state (from the API) or a live event's {quiet, until, next_from}.
  function update(next) {
    if (!next || typeof next !== "object") return;
    state = Object.assign({}, state || {}, {
      quiet: !!next.quiet,
      until: typeof next.until === "string" ? next.until : null,
      next_from: typeof next.next_from === "string" ? next.next_from : null
    });
    ["snoozed_until", "time_zone", "time_zone_set", "quiet_start", "quiet_end"].forEach(function (k) {
      if (k in next) state[k] = next[k];
    });
    schedule();
    render();
  }

  function browserTimeZone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || null; } catch (e) { return null; }
  }

  // The first time, the browser's zone becomes the user's (they can change it on the card).
  function adoptBrowserZone(data) {
    var zone = browserTimeZone();
    if (data.time_zone_set || !zone) return;
    request("PUT", API, { time_zone: zone }).then(update, function () { /* not an IANA name: keep UTC */ });
  }

  function refresh() {
    return request("GET", API).then(function (data) {
      update(data);
      adoptBrowserZone(data);
    }).catch(function () { schedule(); });
  }

  // The page came with the state (base.html's data-quiet), so no event can toast before we know.
  function start() {
    var initial = null;
    try { initial = JSON.parse(body.dataset.quiet || "null"); } catch (e) { initial = null; }
    if (!initial || typeof initial !== "object") return refresh();
    update(initial);
    adoptBrowserZone(initial);
  }

  // ---- the preferences page's card ------------------------------------------------------

  var card = document.getElementById("quiet-hours");
  // The card's words in the reader's language (templates/preferences/_quiet_hours.html).
  var WORDS = {};
  try { WORDS = JSON.parse((card && card.dataset.words) || "{}"); } catch (e) { WORDS = {}; }

  function say(key, when) {
    var template = typeof WORDS[key] === "string" ? WORDS[key] : key;
    return template.replace(/%\((when|status)\)s/g, function () { return when || ""; });
  }

  function clock(iso) {
    var options = { weekday: "short", hour: "2-digit", minute: "2-digit" };
    try {
      return new Date(iso).toLocaleString(document.documentElement.lang || [], Object.assign({ timeZone: state.time_zone || "UTC" }, options));
    } catch (e) {
      return new Date(iso).toLocaleString(document.documentElement.lang || [], options);
    }
  }

  function render() {
    if (!card || !state) return;
    var snoozed = state.snoozed_until && when(state.snoozed_until) > Date.now();
    var status = card.querySelector(".quiet-status");
    if (snoozed) status.textContent = say("snoozed", clock(state.until || state.snoozed_until));
    else if (isQuiet() && state.until) status.textContent = say("quiet_until", clock(state.until));
    else if (state.next_from) status.textContent = say("on_until_quiet", clock(state.next_from));
    else status.textContent = say("on");
    card.dataset.quiet = isQuiet() ? "on" : "off";
    card.querySelector('[data-action="unsnooze"]').hidden = !snoozed;
    var form = card.querySelector("form");
    if (document.activeElement && form.contains(document.activeElement)) return; // the user is typing
    form.elements.time_zone.value = state.time_zone || "";
    form.elements.quiet_start.value = state.quiet_start || "";
    form.elements.quiet_end.value = state.quiet_end || "";
  }

  function showError(message) {
    var el = card.querySelector(".quiet-error");
    el.textContent = message || "";
    el.hidden = !message;
  }

  function act(promise) {
    promise.then(function (data) { showError(""); update(data); }, function (err) { showError(err.message); });
  }

  function setUpCard() {
    if (!card) return;
    card.querySelector('[data-action="snooze-hour"]').addEventListener("click", function () {
      act(request("POST", SNOOZE_API, { minutes: 60 }));
    });
    card.querySelector('[data-action="snooze-tomorrow"]').addEventListener("click", function () {
      act(request("POST", SNOOZE_API, { until: "tomorrow" }));
    });
    card.querySelector('[data-action="unsnooze"]').addEventListener("click", function () {
      act(request("DELETE", SNOOZE_API));
    });
    card.querySelector("form").addEventListener("submit", function (e) {
      e.preventDefault();
      var f = e.target.elements;
      act(request("PUT", API, {
        time_zone: f.time_zone.value.trim(),
        quiet_start: f.quiet_start.value || null,
        quiet_end: f.quiet_end.value || null
      }));
    });
  }

  window.qaNotifyQuiet = { isQuiet: isQuiet, update: update };
  setUpCard();
  start();
})();
