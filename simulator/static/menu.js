// Virtual handset: the Lipa na M-PESA menu (Pay Bill / Buy Goods), which pays without an STK prompt.
(function () {
  "use strict";

  function init() {
    var menu = document.getElementById("menu");
    var form = document.getElementById("menu-form");
    var out = document.getElementById("menu-result");
    var account = document.getElementById("menu-account");
    var apiBase = menu.getAttribute("data-api-base");

    function kind() { return form.querySelector("input[name=kind]:checked").value; }

    form.addEventListener("change", function () {
      var tillPayment = kind() === "buygoods";
      account.disabled = tillPayment;
      account.parentNode.querySelector("[data-account-label]").textContent =
        tillPayment ? "Account number (not asked for a till)" : "Account number";
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var phone = document.getElementById("phone-input").value;
      var body = {
        phone: phone,
        business: document.getElementById("menu-business").value.trim(),
        account: kind() === "paybill" ? account.value : "",
        amount: Number(document.getElementById("menu-amount").value),
        pin: document.getElementById("menu-pin").value
      };
      out.textContent = "Sending\u2026";
      fetch(apiBase + kind(), {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(body)
      }).then(function (res) { return res.json(); }).then(function (data) {
        out.textContent = data.text || data.message || "Failed.";
        document.getElementById("menu-pin").value = "";
      }).catch(function () {
        out.textContent = "No network. Try again.";
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
