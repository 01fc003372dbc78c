// The admin's live page (/admin/live): polls /api/admin/live every 2 s and shows the figures.
// Rates and percentiles are worked out here from the change between polls (over the last
// minute watched), as Prometheus' rate() and histogram_quantile() do; no framework.
(function () {
  "use strict";

  var POLL_MS = 2000;
  var WINDOW_S = 60; // percentiles over the last minute
  var RATE_S = 10; // events per second over the last ten seconds
  var root = document.getElementById("live");
  if (!root) return;
  var samples = []; // [{at, pushed, sent, latency}], oldest first, within WINDOW_S
  var timer = null;

  function figure(name) {
    return root.querySelector('[data-figure="' + name + '"]');
  }

  function show(name, text) {
    var el = figure(name);
    if (el && el.textContent !== text) el.textContent = text;
  }

  function count(value) {
    return value === null || value === undefined ? "?" : Math.round(value).toLocaleString("en");
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 1) return Math.round(value * 1000) + " ms";
    if (value < 120) return value.toFixed(1) + " s";
    if (value < 7200) return Math.round(value / 60) + " min";
    return Math.round(value / 3600) + " h";
  }

  function perSecond(value) {
    if (value === null) return "–";
    return value < 10 ? value.toFixed(1) : Math.round(value).toLocaleString("en");
  }

  // The newest sample at least ``age`` seconds older than ``now``, else the oldest one.
  function sampleBefore(now, age) {
    var found = samples[0];
    for (var i = 0; i < samples.length; i++) {
      if (now.at - samples[i].at >= age) found = samples[i];
    }
    return found === now ? null : found;
  }

  function rate(now, then, key) {
    if (!then || now.at <= then.at) return null;
    return Math.max(0, now.events[key] - then.events[key]) / (now.at - then.at);
  }

  // The q-quantile of the observations between two cumulative histograms, interpolated within
  // its bucket as Prometheus' histogram_quantile() does; null when nothing was observed.
  function quantile(q, now, then) {
    if (!then) return null; // one poll so far: no interval to speak of
    var le = now.le;
    var counts = now.counts.map(function (c, i) {
      return c - (then.counts[i] !== undefined ? then.counts[i] : 0);
    });
    var total = counts.length ? counts[counts.length - 1] : 0;
    if (total <= 0) return null;
    var rank = q * total;
    for (var i = 0; i < counts.length; i++) {
      if (counts[i] >= rank) {
        if (le[i] === "+Inf") return le[i - 1] || null; // beyond the last bound: its lower edge
        var lower = i === 0 ? 0 : le[i - 1];
        var below = i === 0 ? 0 : counts[i - 1];
        var inBucket = counts[i] - below;
        return inBucket > 0 ? lower + (le[i] - lower) * ((rank - below) / inBucket) : le[i];
      }
    }
    return null;
  }

  function showLatency(now, key, prefix) {
    var then = sampleBefore(now, WINDOW_S);
    var base = then ? then.latency[key] : null;
    show(prefix + "p50", seconds(quantile(0.5, now.latency[key], base)));
    show(prefix + "p99", seconds(quantile(0.99, now.latency[key], base)));
  }

  function alarm(name, on) {
    var card = root.querySelector('[data-alert="' + name + '"]');
    if (card) card.classList.toggle("live-alarm", !!on);
  }

  function renderProcesses(processes, total) {
    var body = document.getElementById("live-processes");
    var rows = processes.map(function (p) {
      var tr = document.createElement("tr");
      var share = total > 0 ? p.open_streams / total : 0;
      var cells = [
        "pid " + p.pid,
        count(p.open_streams),
        null,
        count(p.users),
        p.hub_connected ? "connected" : p.open_streams ? "DISCONNECTED" : "idle",
      ];
      cells.forEach(function (text, i) {
        var td = document.createElement("td");
        if (i === 1 || i === 3) td.className = "num";
        if (i === 2) {
          var bar = document.createElement("span");
          bar.className = "live-bar";
          bar.style.width = Math.round(share * 100) + "%";
          td.appendChild(bar);
        } else {
          td.textContent = text;
        }
        if (i === 4 && text === "DISCONNECTED") td.className = "live-bad";
        tr.appendChild(td);
      });
      tr.dataset.pid = p.pid;
      return tr;
    });
    body.replaceChildren.apply(body, rows);
  }

  function render(now) {
    show("open-streams", count(now.open_streams));
    var n = now.processes.length;
    show("processes", n + (n === 1 ? " web process" : " web processes"));
    var recent = sampleBefore(now, RATE_S);
    show("events-per-second", perSecond(rate(now, recent, "sent")));
    show("pushed-per-second", perSecond(rate(now, recent, "pushed")));
    showLatency(now, "outbox_to_redis", "latency-");
    showLatency(now, "redis_to_stream", "stream-");
    show("backlog", count(now.outbox.undelivered));
    show("backlog-age", now.outbox.oldest_age_seconds ? seconds(now.outbox.oldest_age_seconds) : "none");
    show("failed", count(now.outbox.failed));
    show("dead-letters", count(now.dead_letters));
    show("emails-waiting", count(now.emails.retrying));
    show("emails-sending", count(now.emails.sending));
    show("emails-abandoned", count(now.emails.abandoned));
    alarm("backlog", now.outbox.oldest_age_seconds > 60);
    alarm("failed", now.outbox.failed > 0);
    alarm("dead", now.dead_letters > 0);
    alarm("emails", now.emails.retrying > 0 || now.emails.abandoned > 0);
    renderProcesses(now.processes, now.open_streams);
    document.getElementById("live-machine").textContent = now.machine;
    var updated = document.getElementById("live-updated");
    updated.textContent = "updated " + new Date(now.at * 1000).toLocaleTimeString("en-GB");
    updated.dataset.state = "live";
  }

  function poll() {
    fetch(root.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (resp) {
        if (resp.status === 401 || resp.status === 403) {
          stop();
          throw new Error("signed out");
        }
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      })
      .then(function (now) {
        samples.push(now);
        while (samples.length > 2 && now.at - samples[1].at >= WINDOW_S) samples.shift();
        render(now);
      })
      .catch(function (err) {
        var updated = document.getElementById("live-updated");
        updated.textContent = "not updating (" + err.message + ")";
        updated.dataset.state = "stale";
      });
  }

  function start() {
    if (timer === null) {
      poll();
      timer = setInterval(poll, POLL_MS);
    }
  }

  function stop() {
    if (timer !== null) {
      clearInterval(timer);
      timer = null;
    }
  }

  // Poll only while the page is seen: a forgotten background tab costs the site nothing.
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) stop();
    else start();
  });
  start();
})();
