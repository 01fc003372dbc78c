/*
 * "Mute this question" on a toast (issue 18): one click, a CSRF-protected PUT to
 * /api/questions/<id>/watch {"level": "muted"}. The server then leaves the user out of
 * every later event of that question, also of fan-outs already queued; events that were
 * already on their way to this browser show no toast either: the question is remembered
 * as muted here (localStorage, so every tab knows) for as long as a replayed event could
 * still toast. notifications.js announces each toast ("qa:toast") and asks before showing
 * one ("qa:present", cancelable); this file is all the rest.
 */
(function () {
  "use strict";

  var KEY = "qa-muted-questions"; // {question id: when it was muted here (ms)}
  // The button's words, in the reader's language (the script tag carries them; base.html).
  var script = document.currentScript;
  var words = {
    mute: (script && script.dataset.mute) || "Mute this question",
    muted: (script && script.dataset.muted) || "Muted",
    failed: (script && script.dataset.failed) || "Could not mute; try again",
  };
  var REMEMBER_MS = 5 * 60 * 1000; // notifications.js toasts nothing older than this

  function mutedHere() {
    try {
      var stored = JSON.parse(window.localStorage.getItem(KEY) || "{}");
      return stored && typeof stored === "object" ? stored : {};
    } catch (e) {
      return {};
    }
  }

  function setMutedHere(questionId, muted) {
    var stored = mutedHere();
    var now = Date.now();
    Object.keys(stored).forEach(function (id) { if (now - stored[id] > REMEMBER_MS) delete stored[id]; });
    if (muted) stored[questionId] = now; else delete stored[questionId];
    try { window.localStorage.setItem(KEY, JSON.stringify(stored)); } catch (e) { /* private mode: the server still filters */ }
  }

  function questionOf(data) {
    return data && typeof data.question_id === "number" ? data.question_id : null;
  }

  function isMutedHere(questionId) {
    var at = mutedHere()[questionId];
    return typeof at === "number" && Date.now() - at < REMEMBER_MS;
  }

  function mute(questionId) {
    return fetch("/api/questions/" + questionId + "/watch", {
      method: "PUT",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": document.body.dataset.csrf || "" },
      body: JSON.stringify({ level: "muted" }),
    }).then(function (resp) {
      if (!resp.ok) throw new Error("mute failed: " + resp.status);
      setMutedHere(questionId, true);
    });
  }

  // An event of a question muted in this browser a moment ago was in flight: no toast.
  document.addEventListener("qa:present", function (e) {
    var questionId = questionOf(e.detail);
    if (questionId !== null && isMutedHere(questionId)) e.preventDefault();
  });

  document.addEventListener("qa:toast", function (e) {
    var toast = e.detail.toast;
    var questionId = questionOf(e.detail.data);
    if (questionId === null) return;
    var button = document.createElement("button");
    button.type = "button";
    button.className = "toast-mute";
    button.textContent = words.mute;
    button.addEventListener("click", function (ev) {
      ev.stopPropagation(); // the toast itself opens the question
      button.disabled = true;
      mute(questionId).then(function () {
        button.textContent = words.muted;
        toast.classList.add("leaving");
        setTimeout(function () { toast.remove(); }, 250);
      }, function () {
        button.disabled = false;
        button.textContent = words.failed;
      });
    });
    toast.appendChild(button);
  });

  // A level chosen on a question page other than muted ends what this browser remembers.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.matches || !form.matches("form.watch-form[data-watch-kind='question']")) return;
    var chosen = form.querySelector("input[name='level']:checked");
    if (chosen && chosen.value !== "muted") setMutedHere(Number(form.dataset.watchTarget), false);
  });
})();
