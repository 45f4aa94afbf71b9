// Small enhancements of server-rendered pages: live SLA countdowns, and audio
// seeking from the transcript and the findings. Every page works without it.
(function () {
  "use strict";

  function span(seconds) {
    var m = Math.floor(Math.abs(seconds) / 60), d = Math.floor(m / 1440), h = Math.floor((m % 1440) / 60);
    if (d) return d + "天" + h + "小时";
    if (h) return h + "小时" + (m % 60) + "分";
    return (m % 60) + "分";
  }

  function countdowns() {
    var now = Date.now();
    document.querySelectorAll("[data-due]").forEach(function (el) {
      var due = Date.parse(el.getAttribute("data-due"));
      if (isNaN(due)) return;
      var left = (due - now) / 1000;
      el.textContent = left >= 0 ? "剩 " + span(left) : "超时 " + span(left);
      el.classList.toggle("overdue", left < 0);
      var row = el.closest("tr.queue-row");
      if (row) row.classList.toggle("overdue", left < 0);
    });
  }

  function setupPlayer() {
    var audio = document.getElementById("player");
    if (!audio) return;
    var utts = Array.prototype.slice.call(document.querySelectorAll(".utt[data-start]"));

    function seek(seconds, target) {
      audio.currentTime = seconds;
      var playing = audio.play();
      if (playing && playing.catch) playing.catch(function () { /* autoplay refused: position is set */ });
      if (target) {
        target.classList.add("flash");
        setTimeout(function () { target.classList.remove("flash"); }, 900);
      }
    }

    document.addEventListener("click", function (ev) {
      if (ev.target.closest("form, a, input, select, textarea, summary")) return;
      var el = ev.target.closest("[data-seek]");
      if (!el) return;
      var start = parseFloat(el.getAttribute("data-seek"));
      if (isNaN(start)) return;
      var target = el.classList.contains("utt") ? el : null;
      var finding = el.closest(".finding");
      if (finding) {
        var first = (finding.getAttribute("data-utts") || "").split(" ").filter(Boolean)[0];
        target = first ? document.getElementById("utt-" + first) : null;
        if (target) target.scrollIntoView({block: "center", behavior: "smooth"});
      }
      seek(start, target);
    });

    audio.addEventListener("timeupdate", function () {
      var t = audio.currentTime;
      utts.forEach(function (u) {
        var s = parseFloat(u.getAttribute("data-start")), e = parseFloat(u.getAttribute("data-end"));
        u.classList.toggle("playing", t >= s && t < e);
      });
    });

    var useTime = document.getElementById("use-player-time");
    if (useTime) useTime.addEventListener("click", function () {
      document.getElementById("add-start").value = audio.currentTime.toFixed(1);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    countdowns();
    setInterval(countdowns, 30000);
    setupPlayer();
    document.querySelectorAll("[data-back]").forEach(function (a) {
      a.addEventListener("click", function (ev) {
        if (history.length > 1) { ev.preventDefault(); history.back(); }
      });
    });
  });
})();
