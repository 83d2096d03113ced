// Training pages: poll a run's progress (stage, epoch, loss) while it is queued or running, and draw
// its loss curves from TrainingRun.history.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var lossChart = null;

  function describe(progress) {
    if (!progress || !progress.event) return "";
    var parts = [];
    if (progress.stage !== undefined && progress.stages) parts.push("stage " + (progress.stage + 1) + "/" + progress.stages);
    if (progress.size) parts.push(progress.size + " px");
    if (progress.epoch !== undefined && progress.epochs) parts.push("epoch " + (progress.epoch + 1) + "/" + progress.epochs);
    if (progress.batch !== undefined && progress.batches) parts.push("batch " + (progress.batch + 1) + "/" + progress.batches);
    // An epoch's end reports the validation loss, a batch its own training loss: say which one it is.
    if (typeof progress.valid_loss === "number") parts.push("validation loss " + progress.valid_loss.toFixed(3));
    else if (typeof progress.train_loss === "number") parts.push("batch loss " + progress.train_loss.toFixed(3));
    if (!parts.length) parts.push(progress.event.replace(/_/g, " "));
    return parts.join(" · ");
  }

  function render(box, data) {
    var fraction = Math.round((data.fraction || 0) * 100);
    var bar = box.querySelector(".progress");
    bar.querySelector("span").style.width = fraction + "%";
    bar.setAttribute("aria-valuenow", fraction);
    var status = box.querySelector('[data-field="status"]');
    status.textContent = data.status_display;
    status.className = "badge status-" + data.status;
    // The trainer's phase ("computing features 64/240") when it names one, else its stage and epoch.
    var detail = data.active ? [data.phase || describe(data.progress), Portal.percent(data.fraction || 0)].filter(Boolean).join(" · ") : "";
    box.querySelector('[data-field="detail"]').textContent = detail;
    var elapsed = box.querySelector('[data-field="elapsed"]');
    if (elapsed) elapsed.textContent = data.elapsed || "";
    // The same run in the runs table says the same thing as the progress panel.
    document.querySelectorAll('[data-run-status="' + data.id + '"]').forEach(function (badge) {
      badge.textContent = data.status_display;
      badge.className = "badge status-" + data.status;
    });
    renderStages(data.stages);
    renderLog(data.log_tail);
  }

  function cell(text, numeric) {
    return Portal.text("td", text, numeric ? "num" : null);
  }

  // One row per progressive-resizing stage (portal/web/run_display.py stage_rows).
  function renderStages(stages) {
    var body = document.querySelector("#stage-table tbody");
    if (!body || !stages) return;
    body.textContent = "";
    stages.forEach(function (stage) {
      var row = document.createElement("tr");
      var epochs = String(stage.epochs_done) + (!stage.finished && stage.epochs_planned ? " of " + stage.epochs_planned : "");
      var best = typeof stage.best_valid_loss === "number" ? stage.best_valid_loss.toFixed(3) : "—";
      [
        cell(String(stage.number)),
        cell(stage.size + " px", true),
        cell(stage.batch_size === null || stage.batch_size === undefined ? "—" : String(stage.batch_size), true),
        cell(epochs, true),
        cell(stage.lr === null || stage.lr === undefined ? "—" : String(stage.lr), true),
        cell(stage.best_epoch === null || stage.best_epoch === undefined ? "—" : String(stage.best_epoch + 1), true),
        cell(best, true),
        cell(Math.round(stage.duration_s || 0) + " s", true),
      ].forEach(function (td) { row.appendChild(td); });
      body.appendChild(row);
    });
  }

  // The end of the log; stays scrolled to the bottom when the reader was there.
  function renderLog(text) {
    var log = document.getElementById("run-log");
    if (!log || typeof text !== "string" || log.textContent.slice(-text.length) === text) return;
    var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = text;
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function watch(box) {
    var wasActive = null;
    function poll() {
      fetch(box.dataset.progressUrl, { headers: { Accept: "application/json" } })
        .then(function (response) { return response.json(); })
        .then(function (data) {
          render(box, data);
          drawLosses(data.history);
          // When the run ends, reload once to show the evaluation and the gate's decision.
          if (wasActive && !data.active) { window.location.reload(); return; }
          wasActive = data.active;
          if (data.active) setTimeout(poll, POLL_MS);
        })
        .catch(function () { setTimeout(poll, POLL_MS * 2); });
    }
    poll();
  }

  // TrainingRun.history: the run's epoch_end progress events ({stage, size, epoch, train_loss, valid_loss, ...}).
  function drawLosses(history) {
    var canvas = document.getElementById("loss-chart");
    var rows = history || [];
    if (!canvas || !rows.length || typeof Chart === "undefined") return;
    var empty = document.getElementById("loss-empty");
    if (empty) empty.hidden = true;
    var labels = rows.map(function (row) { return row.size + " px · e" + (row.epoch + 1); });
    var train = rows.map(function (row) { return row.train_loss; });
    var valid = rows.map(function (row) { return row.valid_loss; });
    if (lossChart) {
      lossChart.data.labels = labels;
      lossChart.data.datasets[0].data = train;
      lossChart.data.datasets[1].data = valid;
      lossChart.update();
      return;
    }
    lossChart = new Chart(canvas, {
      type: "line",
      data: {
        labels: labels,
        datasets: [
          { label: "Training loss", data: train, borderColor: "#2a6bb3", backgroundColor: "#2a6bb3", tension: 0.2 },
          { label: "Validation loss", data: valid, borderColor: "#b3261e", backgroundColor: "#b3261e", tension: 0.2 },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        // Log scale: a network trained from scratch starts with validation losses in the hundreds
        // (BatchNorm statistics settling), which would flatten every later epoch on a linear axis.
        scales: {
          y: { type: "logarithmic", title: { display: true, text: "loss (log scale)" } },
          x: { title: { display: true, text: "progressive resizing stage · epoch" } },
        },
        plugins: { legend: { position: "bottom" } },
      },
    });
  }

  drawLosses(Portal.readJson("history-data"));
  document.querySelectorAll(".run-progress").forEach(watch);
})();
