// Every dashboard page: a page the browser brings back from its back/forward cache (after a
// logout, say) is asked for again, so the server decides what it shows.
(function () {
  "use strict";
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { window.location.reload(); }
  });
})();
