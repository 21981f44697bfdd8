// Live progress on /ui/jobs and /ui/jobs/{id}: while a shown job is pending or running,
// ask /ui/jobs/live and update its progress bar and step in place, every 2 s while
// something moves, less often (up to every 15 s) while nothing does. When a job's status
// changes (it starts, finishes, fails), the page is loaded again: its buttons, counts and
// result then come from the server. The pages work without this file ("Refresh" link).
(function () {
  "use strict";
  var PERIOD_MS = 2000;
  var MAX_PERIOD_MS = 15000;
  var period = PERIOD_MS;
  var UNFINISHED = ["pending", "running"];

  function watched() {
    return Array.prototype.filter.call(
      document.querySelectorAll("[data-job-id]"),
      function (el) { return UNFINISHED.indexOf(el.getAttribute("data-status")) >= 0; }
    );
  }

  function setStatus(el, job) {
    var cell = el.querySelector(".job-status");
    if (!cell) { return; }
    var badge = document.createElement("span");
    badge.className = "badge badge-" + job.status;
    badge.textContent = job.status;
    cell.textContent = "";
    cell.appendChild(badge);
    if (job.status === "running" && job.cancel_requested) {
      var note = document.createElement("span");
      note.className = "muted";
      note.textContent = " cancel requested";
      cell.appendChild(note);
    }
  }

  function setProgress(el, job) {
    var cell = el.querySelector(".job-progress");
    if (!cell) { return; }
    var bar = cell.querySelector("progress");
    if (job.status === "running" && !bar) {
      bar = document.createElement("progress");
      bar.max = 100;
      cell.insertBefore(bar, cell.firstChild);
    }
    if (bar) {
      bar.value = job.progress;
      bar.textContent = job.progress + "%";
    }
    var step = cell.querySelector(".job-step");
    if (step) { step.textContent = job.step || ""; }
  }

  // True when the page was asked for again (a status changed); else whether anything moved.
  function update(ids, jobs) {
    var found = jobs.map(function (job) { return String(job.id); });
    ids.forEach(function (id) {
      // Deleted meanwhile (pruned): nothing more will come for it.
      if (found.indexOf(id) < 0) {
        document.querySelectorAll('[data-job-id="' + id + '"]').forEach(function (el) {
          el.setAttribute("data-status", "gone");
        });
      }
    });
    var moved = false;
    var restarted = false;
    jobs.forEach(function (job) {
      document.querySelectorAll('[data-job-id="' + job.id + '"]').forEach(function (el) {
        if (el.getAttribute("data-status") !== job.status) {
          setStatus(el, job);
          el.setAttribute("data-status", job.status);
          restarted = true;
        }
        var key = job.progress + "|" + (job.step || "") + "|" + job.cancel_requested;
        if (el.getAttribute("data-seen") !== null && el.getAttribute("data-seen") !== key) {
          moved = true;
        }
        el.setAttribute("data-seen", key);
        setProgress(el, job);
      });
    });
    if (restarted) {
      window.location.reload();
    }
    return restarted || moved;
  }

  function poll() {
    var ids = watched().map(function (el) { return el.getAttribute("data-job-id"); });
    ids = ids.filter(function (id, i) { return ids.indexOf(id) === i; }).slice(0, 100);
    if (ids.length === 0) { return; }  // nothing can change any more: stop
    fetch("/ui/jobs/live?ids=" + ids.join(","), {
      credentials: "same-origin",
      headers: { "Accept": "application/json" }
    })
      .then(function (answer) {
        // A session that expired redirects to the login page: stop, the links still work.
        if (!answer.ok || answer.headers.get("Content-Type").indexOf("json") < 0) {
          throw new Error("status " + answer.status);
        }
        return answer.json();
      })
      .then(function (body) {
        var changed = update(ids, body.jobs);
        period = changed ? PERIOD_MS : Math.min(MAX_PERIOD_MS, period * 1.5);
        window.setTimeout(poll, period);
      })
      .catch(function () { /* leave the page as it is; "Refresh" reloads it */ });
  }

  window.setTimeout(poll, PERIOD_MS);
})();
