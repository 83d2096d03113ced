// Keyboard shortcuts of the review queue. Each key submits one of the page's forms, so the server
// decides what comes next and the page works without JavaScript too.
(function () {
  "use strict";
  var submitted = false;

  var KEY_AT = "review-key-at";
  var viewer = null;
  measureKeyToImage();
  if (document.readyState === "complete") openViewer(); else window.addEventListener("load", openViewer);

  // Key press on the previous page to this page's image on screen (Element Timing of the still image;
  // read by the browser test, shown nowhere).
  function measureKeyToImage() {
    var keyAt = parseFloat(sessionStorage.getItem(KEY_AT));
    sessionStorage.removeItem(KEY_AT);
    if (!keyAt || typeof PerformanceObserver === "undefined") return;
    try {
      new PerformanceObserver(function (list) {
        list.getEntries().forEach(function (entry) {
          if (entry.identifier !== "review-image") return;
          var shown = performance.timeOrigin + (entry.renderTime || entry.loadTime);
          window.reviewKeyToImageMs = Math.round(shown - keyAt);
        });
      }).observe({ type: "element", buffered: true });
    } catch (error) { /* no Element Timing: nothing measured */ }
  }

  // The zoomable viewer (OpenSeadragon, as on the image page) over the still image, with the page's own
  // keys: its keyboard navigation is off, since W/A/S/D and 0 are review keys here. Then the next image
  // of the queue is fetched into the browser cache, so the next key press shows it at once.
  function openViewer() {
    var element = document.getElementById("viewer");
    var still = document.getElementById("review-still");
    if (element && element.dataset.nextUrl) new Image().src = element.dataset.nextUrl;
    if (!element || typeof OpenSeadragon === "undefined") return;
    viewer = OpenSeadragon({
      element: element,
      prefixUrl: element.dataset.prefixUrl,
      tileSources: { type: "image", url: element.dataset.imageUrl, buildPyramid: false },
      showNavigationControl: true,
      maxZoomPixelRatio: 4,
      visibilityRatio: 1,
      constrainDuringPan: true,
      keyboardNavEnabled: false,
      drawer: "canvas",  // raises tile-drawn (the WebGL drawer does not)
      gestureSettingsMouse: { clickToZoom: false },
    });
    viewer.addOnceHandler("tile-drawn", function () {
      if (still) still.hidden = true;
      window.reviewImageDrawn = true;
    });
    window.reviewViewer = viewer;
  }

  function submit(form, button) {
    if (!form || submitted) return;
    submitted = true; // one action per page: a held-down key must not label the next image too
    sessionStorage.setItem(KEY_AT, String(Date.now()));
    if (button) form.requestSubmit(button); else form.requestSubmit();
  }

  function typingInField(target) {
    var tag = target.tagName;
    return tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || target.isContentEditable;
  }

  // A focused control (button, link, summary) owns Enter and Space: a hotkey never overrides it.
  function focusedControl(target) {
    return target !== document.body && target.closest && !!target.closest("button, a[href], summary, [role=button]");
  }

  // Bulk acceptance says how many images it will label, and asks before it does.
  (function bulkCount() {
    var form = document.getElementById("bulk-form");
    var data = document.getElementById("bulk-counts");
    if (!form || !data) return;
    var counts = JSON.parse(data.textContent);
    var input = form.querySelector("input[name=min_confidence]");
    var button = document.getElementById("bulk-accept");
    function update() {
      var threshold = Math.ceil(parseFloat(input.value));
      var total = 0;
      Object.keys(counts).forEach(function (percent) { if (Number(percent) >= threshold) total += counts[percent]; });
      var valid = threshold >= 50 && threshold <= 100;
      button.textContent = valid ? "Accept " + total + " prediction" + (total === 1 ? "" : "s") : "Accept predictions";
      button.disabled = valid && total === 0;
      form.dataset.confirm = "Label " + total + " image" + (total === 1 ? "" : "s") +
        " with the model's prediction (confidence ≥ " + threshold + "\u00a0%)? One U undoes the whole batch.";
    }
    input.addEventListener("input", update);
    update();
  })();

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey || typingInField(target)) return;
    var key = event.key.toLowerCase();
    if ((key === "enter" || key === " ") && focusedControl(target)) return;
    var keys = document.getElementById("category-keys");
    var button = keys && keys.querySelector('button[data-key="' + key + '"]');
    if (button) {
      submit(keys, button);
    } else if (key === "enter") {
      var accept = document.getElementById("accept-suggestion");
      if (accept) submit(accept.form, accept);
    } else if (key === "s") {
      submit(document.getElementById("skip-form"));
    } else if (key === "u") {
      var undo = document.getElementById("undo-form");
      if (undo && !undo.querySelector("button").disabled) submit(undo);
    } else if (viewer && (key === "+" || key === "=")) {
      viewer.viewport.zoomBy(1.4);
    } else if (viewer && (key === "-" || key === "_")) {
      viewer.viewport.zoomBy(1 / 1.4);
    } else if (viewer && key === "r") {
      viewer.viewport.goHome();
    } else {
      return;
    }
    event.preventDefault();
  });
})();
