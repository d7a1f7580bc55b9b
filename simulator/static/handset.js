// Virtual handset: polls the simulator for this phone's pending STK prompt and answers it.
(function () {
  "use strict";

  var POLL_MS = 1000;

  function $(id) { return document.getElementById(id); }

  function init() {
    var root = $("handset");
    var promptUrl = root.getAttribute("data-prompt-url");
    var apiBase = root.getAttribute("data-api-base");
    var phoneInput = $("phone-input");

    var phone = null;
    var shownPromptId = null;
    // A result is shown only for a prompt this page displayed, not for old history.
    var trackedIds = {};
    var resultShownFor = null;
    var pollTimer = null;
    var busy = false;

    function show(section) {
      ["idle", "prompt", "result"].forEach(function (id) { $(id).hidden = id !== section; });
    }

    function setPhoneError(message) {
      var el = $("phone-error");
      el.textContent = message || "";
      el.hidden = !message;
    }

    function showResult(result) {
      resultShownFor = result.checkout_id;
      shownPromptId = null;
      $("result-text").textContent = result.text;
      $("result").setAttribute("data-result-code", String(result.result_code));
      show("result");
      $("result-ok").focus();
    }

    function showPrompt(prompt) {
      if (shownPromptId !== prompt.checkout_id) {
        shownPromptId = prompt.checkout_id;
        trackedIds[prompt.checkout_id] = true;
        $("prompt-text").textContent = prompt.text;
        $("prompt").setAttribute("data-checkout-id", prompt.checkout_id);
        $("pin-input").value = "";
        setButtonsDisabled(false);
        show("prompt");
        $("pin-input").focus();
      }
      $("prompt-expiry").textContent = "Expires in " + prompt.expires_in + " s";
    }

    function showIdle() {
      shownPromptId = null;
      $("idle-text").textContent = "Waiting for an M-PESA prompt on " + phone + "\u2026";
      show("idle");
    }

    function setButtonsDisabled(disabled) {
      ["pin-send", "pin-cancel", "prompt-timeout"].forEach(function (id) { $(id).disabled = disabled; });
    }

    function render(data) {
      if (data.prompt) {
        showPrompt(data.prompt);
        return;
      }
      var last = data.last;
      if (last && trackedIds[last.checkout_id] && resultShownFor !== last.checkout_id) {
        showResult(last);
        return;
      }
      if ($("result").hidden) {
        showIdle();
      }
    }

    function poll() {
      clearTimeout(pollTimer);
      if (!phone) { return; }
      var asked = phone;
      fetch(promptUrl + "?phone=" + encodeURIComponent(asked), { headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (asked !== phone || busy) { return; }
          render(data);
        })
        .catch(function () { /* the simulator may be restarting: keep polling */ })
        .then(function () { pollTimer = setTimeout(poll, POLL_MS); });
    }

    function usePhone(raw) {
      return fetch(promptUrl + "?phone=" + encodeURIComponent(raw), { headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json().then(function (data) { return { ok: r.ok, data: data }; }); })
        .then(function (res) {
          if (!res.ok) {
            setPhoneError(res.data.message || "Invalid phone number.");
            return;
          }
          setPhoneError("");
          phone = res.data.phone;
          phoneInput.value = phone;
          $("status-phone").textContent = phone;
          trackedIds = {};
          resultShownFor = null;
          shownPromptId = null;
          if (window.history && window.history.replaceState) {
            window.history.replaceState(null, "", "?phone=" + encodeURIComponent(phone));
          }
          render(res.data);
          poll();
        })
        .catch(function () { setPhoneError("The simulator is not answering."); });
    }

    function answer(action, payload) {
      var checkoutId = shownPromptId;
      if (!checkoutId || busy) { return; }
      busy = true;
      setButtonsDisabled(true);
      fetch(apiBase + encodeURIComponent(checkoutId) + "/" + action, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(payload || {})
      })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          var result = data.result || data;
          if (result && result.text) {
            showResult(result);
          }
        })
        .catch(function () { setButtonsDisabled(false); })
        .then(function () { busy = false; poll(); });
    }

    $("phone-form").addEventListener("submit", function (event) {
      event.preventDefault();
      usePhone(phoneInput.value.trim());
    });
    $("pin-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var pin = $("pin-input").value;
      if (!pin) { $("pin-input").focus(); return; }
      answer("pin", { pin: pin });
    });
    $("pin-cancel").addEventListener("click", function () { answer("cancel"); });
    $("prompt-timeout").addEventListener("click", function () { answer("timeout"); });
    $("result-ok").addEventListener("click", function () {
      if (phone) { showIdle(); } else { show("idle"); }
    });

    if (phoneInput.value.trim()) {
      usePhone(phoneInput.value.trim());
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
