// cutor-spool status page: relative times and a warning when the page itself is stale.
// The page is static and refreshes itself (a meta refresh); this script only adds what a static
// file cannot know: how long ago it was generated, by the browser's clock.
(function () {
  "use strict";
  function ago(seconds) {
    if (seconds < 0) seconds = 0;
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h ago";
    return (seconds / 86400).toFixed(1) + " d ago";
  }
  function update() {
    var now = Date.now();
    var body = document.body;
    var generated = Date.parse(body.getAttribute("data-generated") || "");
    var staleAfter = parseFloat(body.getAttribute("data-stale-after") || "0");
    var age = (now - generated) / 1000;
    var stamp = document.getElementById("generated-ago");
    if (stamp && !isNaN(age)) stamp.textContent = "(" + ago(age) + ")";
    var banner = document.getElementById("stale");
    if (banner && !isNaN(age) && staleAfter > 0) {
      banner.hidden = age <= staleAfter;
      var since = document.getElementById("stale-since");
      if (since) since.textContent = ago(age);
    }
    var times = document.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var t = Date.parse(times[i].getAttribute("datetime"));
      if (!isNaN(t)) times[i].title = ago((now - t) / 1000);
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    update();
    setInterval(update, 1000);
  });
})();
