// Lipia's small bits of behaviour. Loaded as a file: the CSP forbids inline scripts.
(function () {
  "use strict";

  // A submit button marked data-once is disabled after the first click; the form's
  // idempotency key already makes a second submission harmless, this just says so.
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("button[data-once]").forEach(function (button) {
        button.disabled = true;
        button.textContent = "Working…";
      });
    });
  });

  // Live word count on the spending page, counted the same way as the server does.
  var text = document.querySelector("#spend-form textarea");
  var counter = document.getElementById("word-count");
  if (text && counter) {
    var update = function () {
      var words = (text.value.match(/\S+/g) || []).length;
      counter.textContent = words.toLocaleString() + (words === 1 ? " word" : " words");
    };
    text.addEventListener("input", update);
    update();
  }

  function setBalance(words) {
    if (typeof words !== "number") { return; }
    document.querySelectorAll("[data-balance]").forEach(function (el) {
      el.textContent = words.toLocaleString();
    });
  }

  // The payment page polls its status until the payment is final, backing off as it waits.
  var card = document.getElementById("payment-status");
  if (!card) { return; }
  var url = card.getAttribute("data-status-url");
  var delay = 1500;
  var countdownTimer = null;
  var countdownRunning = false;
  var pollTimer = null;
  var polling = false;

  // One timer at a time: an earlier poll (at expiry, on return to the tab) replaces the planned one.
  function schedule(ms) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, ms);
  }

  function show(state) {
    var previous = card.getAttribute("data-status");
    card.setAttribute("data-status", state.status);
    card.setAttribute("data-final", state.final ? "true" : "false");
    card.className = card.className.replace(/\bborder-\w+\b/, "border-" + state.tone);
    card.querySelector("[data-title]").textContent = state.title;
    card.querySelector("[data-message]").textContent = state.message;
    card.querySelector("[data-receipt]").textContent = state.receipt || "—";
    var icon = card.querySelector("[data-icon]");
    icon.className = "status-icon status-" + state.status;
    card.querySelectorAll("[data-show-when]").forEach(function (el) {
      var key = el.getAttribute("data-show-when");
      var visible = key === "paid" ? state.status === "completed" : Boolean(state[key]);
      el.classList.toggle("d-none", !visible);
    });
    setBalance(state.words_remaining);
    startCountdown(state.expires_in, state.expires_at);
    if (previous !== state.status) { delay = 1500; }
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
      // The prompt just expired: M-Pesa's answer follows within moments, so ask for it now.
      if (left === 0 && countdownRunning) { delay = 1500; schedule(1500); }
      countdownRunning = left > 0;
    };
    tick();
    countdownTimer = setInterval(tick, 1000);
  }

  function poll() {
    if (polling) { return; }  // the answer on its way schedules the next poll
    polling = true;
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      })
      .then(function (state) {
        polling = false;
        show(state);
        if (state.final) {
          clearTimeout(pollTimer);
        } else {
          // While the prompt is on the phone the answer can come any second: keep asking
          // at the same pace. After that, back off.
          delay = countdownRunning ? 1500 : Math.min(delay * 1.15, 5000);
          schedule(delay);
        }
      })
      .catch(function () {
        polling = false;
        delay = Math.min(delay * 2, 15000);  // offline or server busy: try again, more slowly
        schedule(delay);
      });
  }

  // Back from the M-Pesa prompt (or another app): show the latest status at once.
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && card.getAttribute("data-final") !== "true") {
      delay = 1500;
      schedule(0);
    }
  });

  var countdown = card.querySelector("[data-countdown]");
  startCountdown(countdown.getAttribute("data-expires-in"), countdown.getAttribute("data-expires-at"));
  if (card.getAttribute("data-final") !== "true") { schedule(1000); }
})();
