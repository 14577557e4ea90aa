// The otapub fleet dashboard. Data comes from the JSON block in the page (otapub/dashboard.py);
// every value reaches the DOM through textContent, never as markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("fleet-data").textContent);
  var PAGE = 100;
  var COLORS = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#5d4037", "#9e9d24", "#455a64"];

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) { tr.appendChild(el("td", c)); });
    return tr;
  }

  function fill(tbody, rows, empty, columns) {
    tbody.textContent = "";
    if (!rows.length) {
      var tr = document.createElement("tr");
      var td = el("td", empty, "empty");
      td.colSpan = columns;
      tr.appendChild(td);
      tbody.appendChild(tr);
      return;
    }
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(row(r)); });
    tbody.appendChild(frag);
  }

  function width(node) { return Math.max(320, node.clientWidth || 900); }

  // -- totals ------------------------------------------------------------------------------
  document.getElementById("generated").textContent = "as of " + data.generated;
  var t = data.totals;
  [["devices", t.devices, ""], ["checked in", t.seen, ""],
   ["not seen for " + data.silent_days + " days", t.silent, t.silent ? "bad" : ""],
   ["unknown MACs", t.strangers, ""], ["MACs failing auth", t.auth_failing, t.auth_failing ? "bad" : ""]
  ].forEach(function (c) {
    var card = el("div", null, "card " + c[2]);
    card.appendChild(el("b", c[1]));
    card.appendChild(el("span", c[0]));
    document.getElementById("totals").appendChild(card);
  });

  // -- versions over time (uPlot) ------------------------------------------------------------
  (function versions() {
    var box = document.getElementById("versions-chart");
    if (!data.versions.length) { box.appendChild(el("p", "No check-ins yet.", "empty")); box.style.minHeight = "0"; return; }
    var days = [], byVersion = {}, totals = {};
    data.versions.forEach(function (v) {
      if (days[days.length - 1] !== v[0]) days.push(v[0]);
      totals[v[1]] = (totals[v[1]] || 0) + v[2];
    });
    var index = {};
    days.forEach(function (d, i) { index[d] = i; });
    var names = Object.keys(totals).sort(function (a, b) { return totals[b] - totals[a]; });
    var shown = names.slice(0, 8), other = names.length > 8;
    shown.forEach(function (n) { byVersion[n] = days.map(function () { return 0; }); });
    if (other) byVersion["other"] = days.map(function () { return 0; });
    data.versions.forEach(function (v) {
      var key = byVersion[v[1]] ? v[1] : "other";
      byVersion[key][index[v[0]]] += v[2];
    });
    var keys = shown.concat(other ? ["other"] : []);
    var xs = days.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
    var series = [{}].concat(keys.map(function (k, i) {
      return { label: k, stroke: COLORS[i % COLORS.length], width: 2, points: { show: days.length < 40 } };
    }));
    new uPlot({ width: width(box), height: 260, series: series, scales: { x: { time: true } },
                axes: [{}, { label: "devices" }] },
              [xs].concat(keys.map(function (k) { return byVersion[k]; })), box);
  })();

  // -- rollouts --------------------------------------------------------------------------------
  (function rollouts() {
    var box = document.getElementById("rollouts");
    if (!data.rollouts.length) { box.appendChild(el("p", "No rollouts declared.", "empty")); return; }
    data.rollouts.forEach(function (r) {
      var div = el("div", null, "rollout");
      div.setAttribute("data-rollout", r.name);
      var h = el("h3", r.name + " \u2192 " + r.release + " " + (r.version || ""));
      div.appendChild(h);
      div.appendChild(el("div", r.state, "state"));
      div.appendChild(el("div", "gates: " + (r.gates || "none"), "state"));
      if (r.halt) div.appendChild(el("div", "gate tripped: halt (" + r.halt + ")", "halt"));
      if (r.advance) div.appendChild(el("div", "gate passed: stage " + r.advance + " may open", "advance"));
      var table = el("table");
      var head = document.createElement("tr");
      ["stage", "share", "open", "devices", "offered", "updated", "failed", "silent", "pending", "failed %", "updated %"]
        .forEach(function (c) { head.appendChild(el("th", c)); });
      var thead = el("thead"); thead.appendChild(head); table.appendChild(thead);
      var tbody = el("tbody");
      r.stages.forEach(function (s) {
        var tr = row([s.number, s.percent + "%", s.open ? "yes" : "no", s.devices, s.offered, s.updated, s.failed,
                      s.silent, s.pending, s.failed_percent, s.updated_percent]);
        if (s.tripped) tr.className = "tripped";
        tbody.appendChild(tr);
      });
      table.appendChild(tbody);
      div.appendChild(table);
      var chart = el("div", null, "chart");
      div.appendChild(chart);
      box.appendChild(div);
      var xs = r.stages.map(function (s) { return s.number; });
      var bars = uPlot.paths.bars;
      new uPlot({ width: width(box) - 30, height: 180,
                  scales: { x: { time: false, range: [0.5, xs.length + 0.5] }, y: { range: [0, 100] } },
                  axes: [{ label: "stage", incrs: [1], values: function (u, v) { return v.map(String); } },
                         { label: "% of stage" }],
                  series: [{ label: "stage" },
                           { label: "updated %", fill: "rgba(46,125,50,0.55)", stroke: "#2e7d32",
                             paths: bars({ size: [0.6] }), points: { show: false } },
                           { label: "failed + silent % of offered", fill: "rgba(198,40,40,0.8)", stroke: "#c62828",
                             paths: bars({ size: [0.25] }), points: { show: false } }] },
                [xs, r.stages.map(function (s) { return s.updated_percent; }),
                 r.stages.map(function (s) { return s.failed_percent; })], chart);
    });
  })();

  // -- small tables ----------------------------------------------------------------------------
  fill(document.querySelector("#unknown-table tbody"), data.unknown_versions, "none", 2);
  fill(document.querySelector("#auth-table tbody"), data.auth_failures, "none", 4);

  // -- devices: filtered, one page at a time ---------------------------------------------------
  var devices = data.devices, view = devices, page = 0;
  var silentBefore = new Date(Date.parse(data.generated) - data.silent_days * 86400000).toISOString();
  var states = {};
  devices.forEach(function (d) { states[d[4]] = (states[d[4]] || 0) + 1; });
  var select = document.getElementById("device-state");
  Object.keys(states).sort().forEach(function (s) {
    var option = el("option", s + " (" + states[s] + ")");
    option.value = "=" + s;
    select.appendChild(option);
  });
  var tbody = document.querySelector("#devices-table tbody");

  function apply() {
    var q = document.getElementById("device-filter").value.trim().toUpperCase();
    var state = select.value;
    view = devices.filter(function (d) {
      if (state === "silent" && !(d[6] && (!d[5] || d[5] < silentBefore))) return false;
      if (state.charAt(0) === "=" && d[4] !== state.slice(1)) return false;
      return !q || d[0].indexOf(q) >= 0 || d[1].toUpperCase().indexOf(q) >= 0 || d[3].toUpperCase() === q;
    });
    page = 0;
    render();
  }

  function render() {
    var pages = Math.max(1, Math.ceil(view.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    fill(tbody, view.slice(page * PAGE, page * PAGE + PAGE).map(function (d) { return d.slice(0, 6); }),
         "no device matches", 6);
    document.getElementById("page-info").textContent =
      "page " + (page + 1) + " of " + pages + " (" + view.length + " devices)";
    document.getElementById("page-prev").disabled = page === 0;
    document.getElementById("page-next").disabled = page >= pages - 1;
  }

  var timer = null;
  document.getElementById("device-filter").addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(apply, 120);
  });
  select.addEventListener("change", apply);
  document.getElementById("page-prev").addEventListener("click", function () { page--; render(); });
  document.getElementById("page-next").addEventListener("click", function () { page++; render(); });
  render();
  document.body.setAttribute("data-ready", "1");
  // Milliseconds from the navigation's start to a rendered page (bench/bench_dashboard.py reads it).
  document.body.setAttribute("data-render-ms", String(Math.round(performance.now())));
})();
