// Upload page: one XHR per file (so each has its own progress bar), a few at a time, then poll the
// status endpoint until every stored image is classified.
(function () {
  "use strict";
  var panel = document.getElementById("upload-panel");
  if (!panel) return;

  var PARALLEL_UPLOADS = 2;
  var POLL_MS = 1500;
  // Out of scope is a classification too (kept, never confident): nothing more to wait for.
  var FINAL_STATUSES = { classified: true, out_of_scope: true, failed: true };
  var input = document.getElementById("id_files");
  var dropzone = document.getElementById("dropzone");
  var list = document.getElementById("file-list");
  var summary = document.getElementById("upload-summary");
  var knownCategory = document.getElementById("id_known_category");
  var waiting = [];     // files not yet sent
  var active = 0;       // uploads in flight
  var rows = {};        // image id -> rows showing it (the same image can come back as a duplicate)
  var counts = { stored: 0, duplicate: 0, rejected: 0, near: 0 };
  var nearDuplicates = {}; // image id -> {id, url, filename} of its closest earlier near-duplicate
  var pollTimer = null;
  var failed = [];      // files refused for a reason that a retry can fix (signed out, network)
  var signedOut = false;
  var retryButton = document.getElementById("retry-failed");

  function addFiles(files) {
    if (!panel.dataset.sampleId) return; // no sample chosen yet: the drop zone is disabled
    Array.prototype.forEach.call(files, function (file) {
      waiting.push({ file: file, row: makeRow(file) });
    });
    pump();
  }

  function makeRow(file) {
    var row = Portal.text("li", null, "file-row");
    row.appendChild(Portal.text("span", file.name, "fname"));
    var progress = Portal.text("div", null, "progress");
    progress.appendChild(document.createElement("span"));
    row.appendChild(progress);
    row.appendChild(Portal.text("span", "Waiting…", "outcome"));
    list.appendChild(row);
    return row;
  }

  function pump() {
    while (active < PARALLEL_UPLOADS && waiting.length) {
      active += 1;
      send(waiting.shift());
    }
    updateSummary();
  }

  function send(item) {
    var form = new FormData();
    form.append("sample", panel.dataset.sampleId);
    form.append("file", item.file, item.file.name);
    if (knownCategory && knownCategory.value) form.append("category", knownCategory.value);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", panel.dataset.uploadUrl);
    xhr.setRequestHeader("X-CSRFToken", Portal.csrfToken());
    xhr.upload.onprogress = function (event) {
      if (event.lengthComputable) setProgress(item.row, event.loaded / event.total);
    };
    setOutcome(item.row, "Uploading…", "");
    xhr.onload = function () { finished(item, xhr); };
    xhr.onerror = function () {
      retryable(item, "Network error: the upload did not reach the server.");
      done();
    };
    xhr.send(form);
  }

  function finished(item, xhr) {
    var body = null;
    try { body = JSON.parse(xhr.responseText); } catch (error) { body = null; }
    setProgress(item.row, 1);
    if (xhr.status === 401 || (body && body.signed_out)) {
      signedOut = true;
      retryable(item, body && body.reason ? body.reason : "You are signed out: sign in again, then retry.");
    } else if (!body && xhr.status === 403) {
      retryable(item, "The page's security token is no longer valid: reload the page, then choose the files again.");
    } else if (!body) {
      retryable(item, "Server error " + xhr.status + ".");
    } else if (body.outcome === "rejected") {
      showRejected(item.row, body.reason);
    } else {
      counts[body.outcome] += 1;
      showStored(item.row, body);
    }
    done();
  }

  function done() {
    active -= 1;
    pump();
  }

  // Refused for a reason on our side (signed out, network, server): "Retry failed files" sends it again.
  function retryable(item, reason) {
    failed.push(item);
    showRejected(item.row, reason);
    if (retryButton) retryButton.hidden = false;
  }

  function retryFailed() {
    var again = failed;
    failed = [];
    signedOut = false;
    if (retryButton) retryButton.hidden = true;
    again.forEach(function (item) {
      counts.rejected -= 1;
      item.row.querySelector(".progress").classList.remove("bad");
      setProgress(item.row, 0);
      setOutcome(item.row, "Waiting…", "");
      waiting.push(item);
    });
    pump();
    schedulePoll();
  }

  function showRejected(row, reason) {
    counts.rejected += 1;
    row.querySelector(".progress").classList.add("bad");
    setOutcome(row, "Rejected: " + reason, "rejected");
  }

  function showStored(row, image) {
    row.dataset.outcome = image.outcome;
    if (!image.id) {
      setOutcome(row, "Duplicate of an image already stored in another project.", "duplicate");
      return;
    }
    (rows[image.id] = rows[image.id] || []).push(row);
    if (image.near_duplicate_of) {
      nearDuplicates[image.id] = image.near_duplicate_of;
      counts.near += 1;
    }
    renderStatus(row, image);
    schedulePoll();
  }

  function renderStatus(row, image) {
    var outcome = row.querySelector(".outcome");
    outcome.textContent = "";
    outcome.className = "outcome " + row.dataset.outcome;
    var link = Portal.text("a", row.dataset.outcome === "duplicate"
      ? "Duplicate of " + (image.existing_filename || "an existing image") : "Stored");
    link.href = image.url;
    outcome.appendChild(link);
    outcome.appendChild(document.createTextNode(" · "));
    outcome.appendChild(statusBadge(image));
    if (image.blank) outcome.appendChild(Portal.text("span", "blank image", "badge blank"));
    // Near-duplicates (a re-saved copy, a neighbouring tile, a crop) share a side of the train/test split.
    var near = nearDuplicates[image.id];
    if (near) {
      outcome.appendChild(document.createTextNode(" · "));
      var nearLink = Portal.text("a", "near-duplicate of image " + near.id, "near-duplicate");
      nearLink.href = near.url;
      nearLink.title = near.filename;
      outcome.appendChild(nearLink);
    }
  }

  // A prediction the model does not reach reliably (issue 23) is not a green "Classified": it says uncertain.
  function statusBadge(image) {
    var uncertain = image.status === "classified" && image.prediction_uncertain;
    var badge = Portal.text("span", image.status === "classified"
      ? "Classified: " + image.predicted_category_name + " " + Portal.percent(image.predicted_confidence) +
        (uncertain ? " · uncertain" : "")
      : image.status_display, uncertain ? "badge predicted uncertain" : "badge status-" + image.status);
    badge.dataset.status = image.status;
    return badge;
  }

  function setProgress(row, fraction) {
    row.querySelector(".progress > span").style.width = Math.round(fraction * 100) + "%";
  }

  function setOutcome(row, message, kind) {
    var outcome = row.querySelector(".outcome");
    outcome.textContent = message;
    outcome.className = "outcome " + kind;
  }

  function pendingIds() {
    return Object.keys(rows).filter(function (id) {
      return rows[id].some(function (row) {
        var badge = row.querySelector("[data-status]");
        return !badge || !FINAL_STATUSES[badge.dataset.status];
      });
    });
  }

  function schedulePoll() {
    if (!pollTimer) pollTimer = setTimeout(poll, POLL_MS);
  }

  function poll() {
    pollTimer = null;
    var ids = pendingIds();
    if (!ids.length) { updateSummary(); return; }
    fetch(panel.dataset.statusUrl + "?ids=" + ids.join(","), { headers: { Accept: "application/json" } })
      .then(function (response) {
        // Signed out: say so and keep asking (slowly) until the user signs in again.
        signedOut = response.status === 401;
        return response.ok ? response.json() : { images: [] };
      })
      .then(function (data) {
        data.images.forEach(function (image) {
          (rows[image.id] || []).forEach(function (row) { renderStatus(row, image); });
        });
        updateSummary();
        schedulePoll();
      })
      .catch(function () { schedulePoll(); });
  }

  function updateSummary() {
    var total = list.children.length;
    if (!total) { summary.textContent = ""; return; }
    var warning = signedOut ? "Signed out: sign in again (in another tab), then retry the failed files. " : "";
    var inFlight = waiting.length + active;
    var unclassified = pendingIds().length;
    summary.textContent = warning + total + " file" + (total === 1 ? "" : "s") + ": " + counts.stored + " stored" +
      (counts.near ? " (" + counts.near + " near-duplicate" + (counts.near === 1 ? "" : "s") + " of stored images)" : "") + ", " +
      counts.duplicate + " duplicate, " + counts.rejected + " rejected" +
      (inFlight ? " · " + inFlight + " uploading" : "") +
      (unclassified ? " · " + unclassified + " waiting for classification" : "") +
      (!unclassified && !inFlight && Object.keys(rows).length ? " · classification finished" : "");
  }

  if (retryButton) retryButton.addEventListener("click", retryFailed);
  // Choosing a sample enables the drop zone at once; the URL keeps it for a reload, the server remembers
  // the sample after the first upload (the next visit preselects it).
  var picker = document.getElementById("id_sample_pick");
  function useSample() {
    var option = picker.options[picker.selectedIndex];
    var chosen = Boolean(picker.value);
    panel.dataset.sampleId = picker.value;
    dropzone.classList.toggle("disabled", !chosen);
    if (chosen) dropzone.removeAttribute("aria-disabled"); else dropzone.setAttribute("aria-disabled", "true");
    input.disabled = !chosen;
    document.getElementById("choose-sample-first").hidden = chosen;
    var target = document.getElementById("upload-target");
    target.hidden = !chosen;
    target.querySelector('[data-field="sample"]').textContent = chosen ? option.dataset.target : "";
    var labelField = document.getElementById("known-category-field");
    if (labelField) labelField.hidden = !(chosen && option.hasAttribute("data-can-label"));
    if (knownCategory && labelField && labelField.hidden) knownCategory.value = "";
    var url = new URL(window.location.href);
    if (chosen) url.searchParams.set("sample", picker.value); else url.searchParams.delete("sample");
    window.history.replaceState(null, "", url);
  }
  if (picker) picker.addEventListener("change", useSample);

  // The drop zone is a button for the keyboard: Enter or Space opens the file chooser.
  dropzone.addEventListener("keydown", function (event) {
    if (event.target !== dropzone || (event.key !== "Enter" && event.key !== " ")) return;
    event.preventDefault();
    input.click();
  });
  input.addEventListener("change", function () { addFiles(input.files); input.value = ""; });
  ["dragenter", "dragover"].forEach(function (name) {
    dropzone.addEventListener(name, function (event) { event.preventDefault(); dropzone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    dropzone.addEventListener(name, function (event) { event.preventDefault(); dropzone.classList.remove("over"); });
  });
  dropzone.addEventListener("drop", function (event) { addFiles(event.dataTransfer.files); });
})();
