// Lipia's small bits of behaviour. Loaded as a file: the CSP forbids inline scripts.
(function () {
  "use strict";

  // Words this script writes come translated from the page (data-t-* on <body>), never from here.
  function t(name, fallback) {
    return document.body.getAttribute("data-t-" + name) || fallback;
  }
  var WORKING = t("working", "Working…");

  // A submit button marked data-once is disabled after the first click; the form's
  // idempotency key already makes a second submission harmless, this just says so.
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("button[data-once]").forEach(function (button) {
        button.disabled = true;
        button.textContent = WORKING;
      });
    });
  });

  // Live word count on the spending page, counted the same way as the server does.
  var text = document.querySelector("#spend-form textarea");
  var counter = document.getElementById("word-count");
  if (text && counter) {
    var update = function () {
      var words = (text.value.match(/\S+/g) || []).length;
      counter.textContent = t(words === 1 ? "word" : "words", "{n} words").replace("{n}", words.toLocaleString());
    };
    text.addEventListener("input", update);
    update();
  }

  // A Copy button (data-copy names the field): the clipboard API where the browser allows it,
  // otherwise the field is selected and copied the old way. Says what happened, in words.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.querySelector(button.getAttribute("data-copy"));
      var result = document.querySelector("[data-copy-result]");
      if (!field) { return; }
      var say = function (text) { if (result) { result.textContent = text; } };
      var fallback = function () {
        field.focus();
        field.select();
        var copied = false;
        try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
        say(copied ? t("copied", "Copied.") : t("copy-by-hand", "Select the key and copy it by hand."));
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(function () { say(t("copied", "Copied.")); }, fallback);
      } else {
        fallback();
      }
    });
  });

  // Bootstrap's JavaScript is not loaded on customer pages (it would be most of their bytes):
  // this does the two things they used it for, opening the menu and closing an alert. Where
  // Bootstrap's own script is loaded (the operator console) it does the work and this stands aside.
  document.addEventListener("click", function (event) {
    if (window.bootstrap) { return; }
    var toggler = event.target.closest("[data-bs-toggle='collapse']");
    var target = toggler && document.querySelector(toggler.getAttribute("data-bs-target"));
    if (target) {
      var open = target.classList.toggle("show");
      toggler.setAttribute("aria-expanded", open ? "true" : "false");
      toggler.classList.toggle("collapsed", !open);
      return;
    }
    var dismiss = event.target.closest("[data-bs-dismiss='alert']");
    var alert = dismiss && dismiss.closest(".alert");
    if (alert) { alert.remove(); }
  });

  function setBalance(words) {
    if (typeof words !== "number") { return; }
    document.querySelectorAll("[data-balance]").forEach(function (el) {
      el.textContent = words.toLocaleString();
    });
  }

  // The payment page asks for its status until the payment is final, at a pace that follows
  // what can happen next. While the push is on its way or the prompt is on the phone the answer
  // can come any second: ask often. Once the prompt is over the answer comes from M-Pesa's late
  // report or our own query: ask less and less often. A hidden tab asks nothing (a phone's data
  // and battery are the customer's) and asks at once when it shows again; a final payment never.
  var card = document.getElementById("payment-status");
  if (!card) { return; }
  var url = card.getAttribute("data-status-url");
  var FAST_MS = 1500;
  var SLOW_FIRST_MS = 3000;
  var SLOW_MAX_MS = 15000;
  var OFFLINE_MAX_MS = 30000;
  var delay = FAST_MS;
  var failures = 0;
  var countdownTimer = null;
  var countdownRunning = false;
  var pollTimer = null;
  var polling = false;

  function isFinal() { return card.getAttribute("data-final") === "true"; }
  function isHidden() { return document.visibilityState === "hidden"; }

  // One timer at a time: an earlier poll (at expiry, on return to the tab) replaces the planned
  // one. Nothing is planned while the tab is hidden or once the payment is final.
  function schedule(ms) {
    clearTimeout(pollTimer);
    pollTimer = null;
    if (isFinal() || isHidden()) { return; }
    pollTimer = setTimeout(poll, ms);
  }

  function nextDelay(state) {
    if (state.status === "queued" || countdownRunning) { return FAST_MS; }
    return delay < SLOW_FIRST_MS ? SLOW_FIRST_MS : Math.min(delay * 1.5, SLOW_MAX_MS);
  }

  function show(state) {
    var previous = card.getAttribute("data-status");
    card.setAttribute("data-status", state.status);
    card.setAttribute("data-final", state.final ? "true" : "false");
    card.className = card.className.replace(/\bborder-\w+\b/, "border-" + state.tone);
    card.querySelector("[data-title]").textContent = state.title;
    card.querySelector("[data-message]").textContent = state.message;
    card.querySelector("[data-receipt]").textContent = state.receipt || "";
    card.querySelector("[data-receipt-note]").textContent = state.receipt_note || "";
    showResend(state.resend_in);
    var icon = card.querySelector("[data-icon]");
    icon.className = "status-icon status-" + state.status;
    card.querySelectorAll("[data-show-when]").forEach(function (el) {
      var key = el.getAttribute("data-show-when");
      var visible = key === "paid" ? state.status === "completed" : Boolean(state[key]);
      el.classList.toggle("d-none", !visible);
    });
    setBalance(state.words_remaining);
    startCountdown(state.expires_in, state.expires_at);
    if (previous !== state.status) { delay = FAST_MS; }
  }

  // "Send the prompt again" waits a few seconds after a push (the first prompt may still arrive);
  // the server says how many, and refuses an early tap in words as well.
  function showResend(seconds) {
    var button = card.querySelector("[data-resend]");
    if (!button || button.textContent === WORKING) { return; }
    var wait = typeof seconds === "number" ? seconds : 0;
    button.disabled = wait > 0;
    card.querySelector("[data-resend-in]").textContent = String(wait);
    card.querySelector("[data-resend-wait]").classList.toggle("d-none", wait <= 0);
  }

  // Counts down the seconds the server says are left (the phone's clock may be wrong);
  // the expiry time is the fallback.
  function startCountdown(expiresIn, expiresAt) {
    var wrap = card.querySelector("[data-countdown-wrap]");
    var out = card.querySelector("[data-countdown]");
    if (countdownTimer) { clearInterval(countdownTimer); countdownTimer = null; }
    var seconds = parseFloat(expiresIn);
    var end = !isNaN(seconds) ? Date.now() + seconds * 1000 : (expiresAt ? Date.parse(expiresAt) : NaN);
    if (isNaN(end)) { countdownRunning = false; wrap.classList.add("d-none"); return; }
    var tick = function () {
      var left = Math.max(0, Math.round((end - Date.now()) / 1000));
      out.textContent = Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
      wrap.classList.toggle("d-none", left === 0);
      if (left === 0 && countdownTimer) { clearInterval(countdownTimer); countdownTimer = null; }
      // The prompt just expired: M-Pesa's answer follows within moments, so ask for it soon.
      if (left === 0 && countdownRunning) { delay = FAST_MS; schedule(FAST_MS); }
      countdownRunning = left > 0;
    };
    tick();
    countdownTimer = setInterval(tick, 1000);
  }

  function poll() {
    // An answer on its way plans the next poll itself.
    if (polling || isFinal() || isHidden()) { return; }
    polling = true;
    clearTimeout(pollTimer);
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      })
      .then(function (state) {
        polling = false;
        failures = 0;
        show(state);
        delay = nextDelay(state);
        schedule(delay);
      })
      .catch(function () {
        polling = false;
        failures += 1;  // offline or server busy: try again, more slowly each time
        schedule(Math.min(FAST_MS * Math.pow(2, failures), OFFLINE_MAX_MS));
      });
  }

  // Hidden (the customer switched to the M-Pesa prompt or another app): stop asking.
  // Shown again: ask at once, the answer is most likely in.
  document.addEventListener("visibilitychange", function () {
    if (isHidden()) {
      clearTimeout(pollTimer);
      pollTimer = null;
      return;
    }
    delay = FAST_MS;
    poll();
  });
  // Back to the page from the browser's history cache: its status may be old.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { poll(); }
  });

  var countdown = card.querySelector("[data-countdown]");
  startCountdown(countdown.getAttribute("data-expires-in"), countdown.getAttribute("data-expires-at"));
  schedule(1000);
})();
