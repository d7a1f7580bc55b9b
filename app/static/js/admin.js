// The operator console's small bits of behaviour (a file: the CSP forbids inline scripts).
(function () {
  "use strict";

  // Forms marked data-confirm ask once before a repair is sent.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  // While an STK Query's answer is awaited the page reloads itself, a bounded number of times.
  var marker = document.querySelector("[data-admin-refresh]");
  var key = "lipia-admin-refresh:" + window.location.pathname;
  if (!marker) {
    window.sessionStorage.removeItem(key);
    return;
  }
  var count = parseInt(window.sessionStorage.getItem(key) || "0", 10);
  if (count >= 20) { return; }
  window.sessionStorage.setItem(key, String(count + 1));
  var seconds = parseFloat(marker.getAttribute("data-admin-refresh")) || 2;
  window.setTimeout(function () { window.location.reload(); }, seconds * 1000);
}());
