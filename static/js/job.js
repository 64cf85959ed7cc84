// Glue between the job's event stream and its charts. Everything else on the
// page (status, progress, log, samples, checkpoints) is swapped in by htmx
// from server-rendered fragments.
(function () {
  "use strict";

  // One chart per element with data-metrics="key[,key]"; series share the step axis. Keys also named in
  // data-percent="key[,key]" are fractions (0..1): drawn as 0-100 % on an axis of their own, on the right.
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];

  function makeChart(el) {
    var keys = el.dataset.metrics.split(",");
    var labels = (el.dataset.labels || el.dataset.metrics).split(",");
    var percent = (el.dataset.percent || "").split(",").filter(Boolean);
    var data = [[]].concat(keys.map(function () { return []; }));
    var resumed = [];
    var series = [{ label: "step" }].concat(keys.map(function (key, i) {
      var line = { label: labels[i], stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true };
      if (percent.indexOf(key) >= 0) {
        line.scale = "percent";
        line.points = { show: true };  // evaluation points are sparse: show each one
        line.value = function (u, v) { return v === null || v === undefined ? "--" : v.toFixed(1) + " %"; };
      }
      return line;
    }));
    var scales = { x: { time: false } };
    // Small values (learning rates) in exponent form: uPlot's default rounds 2e-4 to "0".
    var tick = function (v) { return v !== 0 && Math.abs(v) < 0.01 ? v.toExponential(1) : String(+v.toPrecision(6)); };
    var axes = [{ label: "step" }, { label: el.dataset.unit || "", size: 60,
                                      values: function (u, splits) { return splits.map(tick); } }];
    if (percent.length) {
      scales.percent = { auto: false, range: [0, 100] };
      axes.push({ scale: "percent", side: 1, label: "%", grid: { show: false } });
    }
    var plot = new uPlot({
      width: Math.max(el.clientWidth, 280),
      height: Number(el.dataset.height || 200),
      scales: scales,
      axes: axes,
      series: series,
      hooks: {
        draw: [function (u) {
          // A dashed line where the run resumed from a checkpoint.
          var ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = "#f59e0b";
          ctx.setLineDash([6, 4]);
          resumed.forEach(function (step) {
            var x = u.valToPos(step, "x", true);
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
          });
          ctx.restore();
        }],
      },
    }, data, el);
    var seen = {};
    return {
      el: el,
      add: function (point) {
        // The marker first: a resumed run usually re-runs steps the killed attempt had reported.
        if (point.resumed && resumed.indexOf(point.step) < 0) resumed.push(point.step);
        var values = keys.map(function (key) {
          var v = point[key];
          if (v === undefined || v === null) return null;
          return percent.indexOf(key) >= 0 ? 100 * v : v;
        });
        if (values.every(function (v) { return v === null; })) return;
        var at = seen[point.step];
        if (at === undefined) {
          seen[point.step] = data[0].length;
          data[0].push(point.step);
          values.forEach(function (v, i) { data[i + 1].push(v); });
        } else {
          // The resumed run's value replaces the lost attempt's: one continuous line, as /metrics gives.
          values.forEach(function (v, i) { if (v !== null) data[i + 1][at] = v; });
        }
        plot.setData(data);
        el.dataset.points = String(data[0].length);
        keys.forEach(function (key, i) {  // per series, e.g. data-count-eval_loss: what a reader (or test) can check
          el.setAttribute("data-count-" + key, String(data[i + 1].filter(function (v) { return v !== null; }).length));
        });
      },
      resize: function () { plot.setSize({ width: Math.max(el.clientWidth, 280), height: plot.height }); },
    };
  }

  function setup() {
    var source = document.getElementById("metrics-source");
    if (!source || typeof uPlot === "undefined") return;
    var charts = Array.prototype.map.call(document.querySelectorAll("[data-metrics]"), makeChart);
    source.addEventListener("sse:metric", function (evt) {
      var point = JSON.parse(evt.detail.data);
      charts.forEach(function (chart) { chart.add(point); });
    });

    // Keep the log following new lines while the reader is at its end.
    var log = document.getElementById("log");
    if (log) {
      var following = true;
      log.addEventListener("scroll", function () {
        following = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
      });
      log.addEventListener("htmx:sseMessage", function () {
        if (following) log.scrollTop = log.scrollHeight;
      });
    }
    window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setup);
  } else {
    setup();
  }
})();
