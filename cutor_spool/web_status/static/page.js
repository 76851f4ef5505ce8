// cutor-spool status page. The pages are static files; this script adds what a static file cannot:
// - how long ago the page was generated, and a warning when nothing regenerates the site any more
//   (judged from fresh.js, which every regeneration rewrites, so a finished submission's page,
//   rendered once, does not warn while workers keep the site fresh);
// - the refresh of pages that follow the spool, paused while a search is open;
// - on the front page: search and filters over every result (history/<n>.js), kept in the URL's
//   hash so that a search can be shared, and the charts (uPlot, static/uPlot.iife.min.js);
//   a hash without "=" is an element's id (a charge's link to its invocation): its row is shown,
//   its <details> opened, and the search left alone.
// Without JavaScript every page still works: plain tables and a <meta> refresh.
// Nothing from the spool is ever parsed as HTML here: text goes in with textContent.
(function () {
  "use strict";
  var body;

  function duration(seconds) {
    if (seconds < 0) seconds = 0;
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }
  function ago(seconds) {
    return duration(seconds) + " ago";
  }

  // -- staleness ------------------------------------------------------------------------------------
  // The newest regeneration this page knows of: fresh.js's, and its own if it is a page that is
  // regenerated (the front page, a live page); a final page (a result, a history page) is never
  // rendered again, so its own date says nothing about the workers.
  function lastRegenerated() {
    var times = [];
    var fresh = window.cutorSpoolFresh;
    if (fresh && fresh.generated) times.push(Date.parse(fresh.generated));
    if (body.getAttribute("data-refresh")) times.push(Date.parse(body.getAttribute("data-generated") || ""));
    times = times.filter(function (t) { return !isNaN(t); });
    return times.length ? Math.max.apply(null, times) : NaN;
  }
  function staleAfter() {
    var fresh = window.cutorSpoolFresh;
    var value = fresh && fresh.stale_after ? fresh.stale_after : body.getAttribute("data-stale-after");
    return parseFloat(value || "0");
  }
  function update() {
    var now = Date.now();
    var generated = Date.parse(body.getAttribute("data-generated") || "");
    var stamp = document.getElementById("generated-ago");
    if (stamp && !isNaN(generated)) stamp.textContent = "(" + ago((now - generated) / 1000) + ")";
    var banner = document.getElementById("stale");
    var last = lastRegenerated();
    var limit = staleAfter();
    if (banner) {
      var age = (now - last) / 1000;
      banner.hidden = isNaN(last) || !(limit > 0) || age <= limit;
      var since = document.getElementById("stale-since");
      if (since && !isNaN(last)) since.textContent = duration(age);
    }
    var times = document.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var t = Date.parse(times[i].getAttribute("datetime"));
      if (!isNaN(t)) times[i].title = ago((now - t) / 1000);
    }
  }
  // Loads fresh.js again (a new script element: a page opened from file:// cannot fetch a file).
  function reloadFresh() {
    var script = document.createElement("script");
    script.src = (body.getAttribute("data-root") || "") + "fresh.js?t=" + Date.now();
    script.onload = script.onerror = function () {
      script.remove();
      update();
    };
    document.head.appendChild(script);
  }

  // -- refresh --------------------------------------------------------------------------------------
  var searching = false;
  function scheduleRefresh() {
    var every = parseFloat(body.getAttribute("data-refresh") || "0");
    if (!(every > 0)) return;
    setInterval(function () {
      var active = document.activeElement;
      var typing = active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
      if (!searching && !typing) location.reload();
    }, every * 1000);
  }

  // -- search ---------------------------------------------------------------------------------------
  var KEYS = []; // the columns of a row (search.ROW_KEYS), given by the page with the file names
  var SHOWN = 500; // rows drawn at most; the count says how many match
  var GOOD = { ok: 1, accepted: 1, alive: 1, built: 1, success: 1 };
  var BUSY = { queued: 1, claimed: 1, installing_dependencies: 1, dependencies_installed: 1, compiling: 1,
    compiled: 1, running: 1, testing: 1, building: 1 };
  function tone(v) {
    if (v === null || v === undefined || v === "unknown" || v === "done" || v === "skipped") return "neutral";
    if (GOOD[v]) return "good";
    if (v === "partial" || v === "stale") return "warn";
    if (BUSY[v]) return "busy";
    return "bad";
  }
  function seconds(v) {
    if (v === null || v === undefined) return "\u2013";
    if (v < 10) return v.toFixed(3) + " s";
    if (v < 120) return v.toFixed(1) + " s";
    var m = Math.floor(v / 60), s = Math.floor(v) % 60;
    return m + "m " + (s < 10 ? "0" : "") + s + "s";
  }
  function size(v) {
    if (v === null || v === undefined) return "\u2013";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    for (var i = 0; i < units.length; i++) {
      if (v < 1024 || i === units.length - 1) return i === 0 ? v.toFixed(0) + " B" : v.toFixed(1) + " " + units[i];
      v /= 1024;
    }
  }
  function score(v) {
    return v === null || v === undefined ? "\u2013" : String(+v.toPrecision(6));
  }
  function visible(v) {
    // eslint-disable-next-line no-control-regex
    return (v === null || v === undefined ? "" : String(v)).replace(/\r\n/g, "\n").replace(/[\x00-\x08\x0b-\x1f\x7f]/g,
      function (c) { return "\\x" + ("0" + c.charCodeAt(0).toString(16)).slice(-2); });
  }
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    if (text !== undefined) td.textContent = text;
    tr.appendChild(td);
    return td;
  }
  function badge(value) {
    var span = document.createElement("span");
    span.className = "badge " + tone(value);
    span.textContent = (value || "\u2013").replace(/_/g, " ");
    return span;
  }
  function rowElement(r) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-id", r.name);
    var id = cell(tr, undefined, "id");
    var a = document.createElement("a");
    a.href = "s/" + encodeURIComponent(r.name) + ".html";
    a.textContent = r.name;
    id.appendChild(a);
    cell(tr).appendChild(badge(r.state === "done" ? r.outcome : r.state));
    cell(tr, r.score !== null && r.score !== undefined ? score(r.score) + "/" + score(r.max_score) : "\u2013", "num");
    cell(tr, r.tests || "\u2013", "num");
    cell(tr, seconds(r.cpu_time), "num");
    cell(tr, seconds(r.wall_time), "num");
    cell(tr, size(r.memory), "num");
    cell(tr, r.host || "\u2013", "muted");
    cell(tr, seconds(r.queue_wait), "num");
    var fin = cell(tr, undefined, "num");
    var time = document.createElement("time");
    time.setAttribute("datetime", r.finished || "");
    time.textContent = r.finished ? r.finished.replace("T", " ").slice(0, 19) : "\u2013";
    fin.appendChild(time);
    var msg = visible(r.message);
    cell(tr, msg.length > 160 ? msg.slice(0, 157) + "..." : msg, "msg");
    return tr;
  }

  // The rows of every result are in history/<n>.js, loaded when a search first needs them (the front
  // page refreshes itself: it stays light while nobody searches).
  var loading = null;
  function loadRows(done) {
    if (loading === "loaded") return done();
    if (loading) return loading.push(done);
    loading = [done];
    var source = document.getElementById("result-files");
    var data = source ? JSON.parse(source.textContent) : { keys: [], files: [] };
    var files = data.files;
    KEYS = data.keys;
    var left = files.length;
    function one() {
      if (--left > 0) return;
      var waiting = loading;
      loading = "loaded";
      waiting.forEach(function (f) { f(); });
    }
    if (!files.length) {
      left = 1;
      return one();
    }
    files.forEach(function (file) {
      var script = document.createElement("script");
      script.src = file;
      script.onload = script.onerror = one;
      document.head.appendChild(script);
    });
  }

  var rows = null; // every result, newest first, built once from the history/<n>.js files
  function allRows() {
    if (rows) return rows;
    var chunks = (window.cutorSpoolRows || []).slice().sort(function (a, b) { return a[0] - b[0]; });
    rows = [];
    for (var c = chunks.length - 1; c >= 0; c--) {
      var data = chunks[c][1];
      for (var i = data.length - 1; i >= 0; i--) {
        var r = {};
        for (var k = 0; k < KEYS.length; k++) r[KEYS[k]] = data[i][k];
        r.key = String(r.name).toLowerCase();
        rows.push(r);
      }
    }
    return rows;
  }

  var FIELDS = { q: "f-id", state: "f-state", outcome: "f-outcome", from: "f-from", to: "f-to" };
  function readForm() {
    var f = {};
    for (var k in FIELDS) f[k] = document.getElementById(FIELDS[k]).value.trim();
    return f;
  }
  function writeForm(f) {
    for (var k in FIELDS) {
      var el = document.getElementById(FIELDS[k]);
      var value = f[k] || "";
      if (el.tagName === "SELECT" && value && !el.querySelector('option[value="' + CSS.escape(value) + '"]')) {
        var opt = document.createElement("option");
        opt.value = opt.textContent = value;
        el.appendChild(opt);
      }
      el.value = value;
    }
  }
  function searchHash() {
    return location.hash.replace(/^#/, "").indexOf("=") >= 0 || location.hash.length <= 1;
  }
  function showTarget() {
    var target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (!target) return;
    for (var p = target.parentElement; p; p = p.parentElement) if (p.tagName === "DETAILS") p.open = true;
    target.scrollIntoView({ block: "center" });
  }
  function fromHash() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    var f = {};
    for (var k in FIELDS) f[k] = params.get(k) || "";
    return f;
  }
  function toHash(f) {
    var params = new URLSearchParams();
    for (var k in FIELDS) if (f[k]) params.set(k, f[k]);
    var text = params.toString();
    history.replaceState(null, "", text ? "#" + text : location.pathname + location.search);
  }
  function matches(f) {
    var q = f.q.toLowerCase();
    return allRows().filter(function (r) {
      if (q && r.key.indexOf(q) < 0) return false;
      if (f.state && r.state !== f.state) return false;
      if (f.outcome && r.outcome !== f.outcome) return false;
      var fin = r.finished || "";
      if (f.from && !(fin && fin >= f.from)) return false;
      if (f.to && !(fin && fin.slice(0, f.to.length) <= f.to)) return false;
      return true;
    });
  }

  var original = null; // the table the server rendered (recent results)
  var heading = null; // and its heading's count
  function applySearch() {
    var table = document.querySelector("table.results");
    var status = document.getElementById("f-status");
    var f = readForm();
    toHash(f);
    searching = !!(f.q || f.state || f.outcome || f.from || f.to);
    if (!table) return;
    var tbody = table.tBodies[0];
    if (original === null) original = tbody;
    var count = document.getElementById("results-count");
    var title = document.getElementById("results-title");
    if (heading === null && count) heading = count.textContent;
    if (title) title.textContent = searching ? "Search results" : "Recent results";
    if (!searching) {
      if (count) count.textContent = heading;
      if (tbody !== original) table.replaceChild(original, tbody);
      status.textContent = "";
      table.removeAttribute("data-filtered");
      return;
    }
    loadRows(function () { showMatches(table, f); });
  }
  function showMatches(table, f) {
    if (JSON.stringify(f) !== JSON.stringify(readForm())) return; // changed while the rows loaded
    var tbody = table.tBodies[0];
    var status = document.getElementById("f-status");
    var started = performance.now();
    var found = matches(f);
    var fresh = document.createElement("tbody");
    for (var i = 0; i < found.length && i < SHOWN; i++) fresh.appendChild(rowElement(found[i]));
    table.replaceChild(fresh, tbody);
    table.setAttribute("data-filtered", found.length);
    var count = document.getElementById("results-count");
    if (count) count.textContent = "(" + Math.min(found.length, SHOWN) + " of " + found.length + " matches shown)";
    body.setAttribute("data-filter-ms", (performance.now() - started).toFixed(1));
    status.textContent = found.length + " of " + allRows().length + " results match" +
      (found.length > SHOWN ? " (the newest " + SHOWN + " shown)" : "") + "; the page does not refresh while you search.";
  }
  function setupSearch() {
    var form = document.getElementById("search");
    if (!form) return;
    form.hidden = false;
    form.addEventListener("submit", function (e) { e.preventDefault(); });
    form.addEventListener("input", applySearch);
    form.addEventListener("change", applySearch);
    document.getElementById("f-clear").addEventListener("click", function () {
      writeForm({});
      applySearch();
    });
    window.addEventListener("hashchange", function () {
      if (!searchHash()) return showTarget();
      writeForm(fromHash());
      applySearch();
    });
    if (!searchHash()) return showTarget();
    writeForm(fromHash());
    applySearch();
  }

  // -- charts ---------------------------------------------------------------------------------------
  function shortSeconds(v) {
    if (v === null || v === undefined) return "";
    if (v === 0) return "0";
    if (v < 1) return Math.round(v * 1000) + " ms";
    if (v < 120) return +v.toPrecision(3) + " s";
    if (v < 7200) return +(v / 60).toPrecision(3) + " min";
    return +(v / 3600).toPrecision(3) + " h";
  }
  // Time labels in UTC, 24-hour, as every time on the page; the date under the first of each day.
  function timeLabels(u, splits, axis, space, incr) {
    return splits.map(function (ts, i) {
      var iso = new Date(ts * 1000).toISOString();
      var day = iso.slice(0, 10);
      if (incr >= 86400) return day;
      var first = i === 0 || new Date(splits[i - 1] * 1000).toISOString().slice(0, 10) !== day;
      return iso.slice(11, incr < 60 ? 19 : 16) + (first ? "\n" + day : "");
    });
  }
  function chart(id, data, series, range, extra) {
    var el = document.getElementById(id);
    if (!el) return;
    var width = Math.max(240, el.clientWidth - 16);
    var opts = {
      width: width,
      height: 200,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      scales: {
        x: { time: true, range: function () { return range; } },
        y: { range: function (u, min, max) { return [0, Math.max(1, (max || 0) * 1.1)]; } },
      },
      legend: { live: false },
      series: [{}].concat(series),
      axes: [{ values: timeLabels }, { size: 60, values: extra && extra.values }],
    };
    new uPlot(opts, data, el);
    el.setAttribute("data-series", series.map(function (s) { return s.label; }).join(","));
    el.setAttribute("data-points", data[0].length);
  }
  function setupCharts() {
    var source = document.getElementById("chart-data");
    if (!source || typeof uPlot === "undefined") return;
    var c = JSON.parse(source.textContent);
    document.getElementById("chart-grid").hidden = false;
    var q = c.samples;
    // One time range for the three charts, so that they line up.
    var range = [c.times[0], c.times[c.times.length - 1] + c.step];
    chart("chart-queue", [q.times, q.queued, q.running], [
      { label: "waiting", stroke: "#0550ae", width: 2, fill: "rgba(5,80,174,.08)" },
      { label: "running", stroke: "#1a7f37", width: 2 },
    ], range);
    chart("chart-throughput", [c.times, c.per_minute], [
      { label: "finished/min", stroke: "#1a7f37", fill: "rgba(26,127,55,.35)", paths: uPlot.paths.bars({ size: [0.8, 40] }),
        points: { show: false } },
    ], range);
    var secs = function (u, vals) { return vals.map(shortSeconds); };
    chart("chart-latency", [c.times, c.p50, c.p95], [
      { label: "p50", stroke: "#0550ae", width: 2, spanGaps: true, points: { show: true, size: 4 } },
      { label: "p95", stroke: "#b42318", width: 2, spanGaps: true, points: { show: true, size: 4 } },
    ], range, { values: secs });
  }

  document.addEventListener("DOMContentLoaded", function () {
    body = document.body;
    update();
    setInterval(update, 1000);
    reloadFresh(); // at once too: a web server's cache may have served an old fresh.js with the page
    setInterval(reloadFresh, 10000);
    setupSearch();
    try {
      setupCharts();
    } catch (e) {
      body.setAttribute("data-chart-error", String(e));
    }
    scheduleRefresh();
  });
})();
