// Dashboard: heatmap colours and count/percent toggle, the model selector, the history chart.
(function () {
  "use strict";

  var INK = [29, 39, 51];  // --ink
  var WHITE = [255, 255, 255];

  function luminance(rgb) {
    var c = rgb.map(function (v) { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  }

  function contrast(a, b) {
    var la = luminance(a), lb = luminance(b);
    return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
  }

  function blend(rgb, alpha) {
    return rgb.map(function (v) { return Math.round(v * alpha + 255 * (1 - alpha)); });
  }

  function colourCells() {
    document.querySelectorAll("#confusion-matrix td").forEach(function (cell) {
      var share = parseFloat(cell.dataset.percent) / 100;
      if (!share) return;
      // Blue for the diagonal (right), red for confusions; intensity = share of the row. The text is
      // ink or white, whichever reads better; where neither reaches WCAG AA (4.5:1) the shade deepens
      // until white does.
      var hue = cell.dataset.correct === "1" ? [31, 84, 145] : [160, 32, 26];
      var alpha = 0.08 + 0.82 * share;
      var background = blend(hue, alpha);
      while (Math.max(contrast(background, INK), contrast(background, WHITE)) < 4.5 && alpha < 1) {
        alpha = Math.min(1, alpha + 0.02);
        background = blend(hue, alpha);
      }
      var light = contrast(background, WHITE) > contrast(background, INK);
      cell.style.background = "rgb(" + background.join(", ") + ")";
      cell.style.color = light ? "#fff" : "var(--ink)";
      cell.classList.toggle("light-text", light);
    });
  }

  function showMode(mode) {
    document.querySelectorAll("#matrix-toggle button").forEach(function (button) {
      button.classList.toggle("on", button.dataset.mode === mode);
    });
    document.querySelectorAll("#confusion-matrix td").forEach(function (cell) {
      var target = cell.querySelector("a, span");
      if (!target) return;
      target.textContent = mode === "percent" ? Portal.percent(parseFloat(cell.dataset.percent) / 100) : cell.dataset.count;
    });
  }

  function historyChart() {
    var canvas = document.getElementById("history-chart");
    var history = Portal.readJson("history-data");
    if (!canvas || !history || !history.length || typeof Chart === "undefined") return;
    new Chart(canvas, {
      type: "line",
      data: {
        labels: history.map(function (row) { return "v" + row.version; }),
        datasets: [
          { label: "Accuracy", data: history.map(function (row) { return row.accuracy; }), borderColor: "#2a6bb3", backgroundColor: "#2a6bb3", tension: 0.2 },
          { label: "Macro F1", data: history.map(function (row) { return row.macro_f1; }), borderColor: "#2f7d4f", backgroundColor: "#2f7d4f", tension: 0.2 },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: {
          x: { offset: true },
          // The figures are fractions (as the API sends them); the axis and tooltips say percentages, as the page does.
          y: { min: 0, max: 1, ticks: { callback: function (value) { return Portal.percent(value); } }, title: { display: true, text: "on the fixed test split" } },
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: { callbacks: { label: function (item) { return item.dataset.label + ": " + Portal.percent(item.parsed.y); } } },
        },
      },
    });
  }

  var picker = document.getElementById("id_model");
  if (picker) picker.addEventListener("change", function () { picker.form.submit(); });
  document.querySelectorAll("#matrix-toggle button").forEach(function (button) {
    button.addEventListener("click", function () { showMode(button.dataset.mode); });
  });
  colourCells();
  historyChart();
})();
