// Tollgate dashboard: refreshes the panel (server-rendered HTML, GET /dashboard/panel) every
// data-refresh-ms milliseconds without reloading the page. Signed out (401): back to sign-in.
(function () {
  "use strict";
  var body = document.body;
  var every = parseInt(body.getAttribute("data-refresh-ms"), 10) || 5000;
  var panel = document.getElementById("panel");
  var busy = false;

  function refresh() {
    if (busy || document.hidden || !panel) return;
    busy = true;
    fetch("/dashboard/panel", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign("/dashboard");
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        var open = panel.querySelector("details[open]") !== null;
        panel.innerHTML = html;
        if (open) {
          var details = panel.querySelector("details");
          if (details) details.open = true;
        }
        body.setAttribute("data-refreshes", String(1 + parseInt(body.getAttribute("data-refreshes") || "0", 10)));
      })
      .catch(function () { /* offline for a moment: the next tick tries again */ })
      .then(function () { busy = false; });
  }

  window.setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
