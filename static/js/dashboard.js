// Dashboard: heatmap colours and count/percent toggle, the model selector, the history chart.
(function () {
  "use strict";

  function colourCells() {
    document.querySelectorAll("#confusion-matrix td").forEach(function (cell) {
      var share = parseFloat(cell.dataset.percent) / 100;
      if (!share) return;
      // Blue for the diagonal (right), red for confusions; intensity = share of the row.
      var hue = cell.dataset.correct === "1" ? "42, 107, 179" : "179, 38, 30";
      cell.style.background = "rgba(" + hue + ", " + (0.08 + 0.82 * share).toFixed(3) + ")";
      cell.style.color = share > 0.5 ? "#fff" : "";
    });
  }

  function showMode(mode) {
    document.querySelectorAll("#matrix-toggle button").forEach(function (button) {
      button.classList.toggle("on", button.dataset.mode === mode);
    });
    document.querySelectorAll("#confusion-matrix td").forEach(function (cell) {
      var target = cell.querySelector("a, span");
      if (!target) return;
      target.textContent = mode === "percent" ? Math.round(parseFloat(cell.dataset.percent)) + "%" : cell.dataset.count;
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
          y: { min: 0, max: 1, title: { display: true, text: "on the fixed test split" } },
        },
        plugins: { legend: { position: "bottom" } },
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
