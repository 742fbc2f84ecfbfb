// Live "time left" for <time class="countdown" datetime="...">.
(function () {
  var items = document.querySelectorAll("time.countdown");
  if (!items.length) return;
  function text(ms) {
    if (ms <= 0) return "time is up";
    var s = Math.floor(ms / 1000), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60), sec = s % 60;
    if (d > 0) return d + " d " + h + " h " + m + " min left";
    if (h > 0) return h + " h " + m + " min left";
    return m + " min " + (sec < 10 ? "0" : "") + sec + " s left";
  }
  function tick() {
    items.forEach(function (el) { el.textContent = text(new Date(el.getAttribute("datetime")) - new Date()); });
  }
  tick();
  setInterval(tick, 1000);
})();
