// Glue between the job's event stream and the loss chart. Everything else on
// the page is swapped in by htmx from server-rendered fragments.
(function () {
  "use strict";

  function setup() {
    var el = document.getElementById("loss-chart");
    if (!el || typeof uPlot === "undefined") return;
    var steps = [], losses = [], seen = {};
    var chart = new uPlot({
      width: Math.max(el.clientWidth, 320),
      height: 240,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { label: "loss" }],
      series: [{ label: "step" }, { label: "training loss", stroke: "#2563eb", width: 2 }],
    }, [steps, losses], el);

    el.addEventListener("sse:metric", function (evt) {
      var data = JSON.parse(evt.detail.data);
      if (data.loss === undefined || seen[data.step]) return;
      seen[data.step] = true;
      steps.push(data.step);
      losses.push(data.loss);
      chart.setData([steps, losses]);
      el.dataset.points = String(steps.length);
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

    window.addEventListener("resize", function () {
      chart.setSize({ width: Math.max(el.clientWidth, 320), height: 240 });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setup);
  } else {
    setup();
  }
})();
