// "Where the model looked": the Grad-CAM heat map as a toggleable overlay in the image page's zoomable viewer.
// Asked for on first use (a worker computes it once per image and model version: POST), polled until stored
// (GET answers 202 meanwhile), then drawn over the part of the image the model sees, with an opacity slider.
(function () {
  "use strict";
  var controls = document.getElementById("heatmap-controls");
  var viewer = window.imageViewer;
  if (!controls || !viewer) return;
  var toggle = document.getElementById("heatmap-toggle");
  var slider = document.getElementById("heatmap-opacity");
  var status = document.getElementById("heatmap-status");
  var url = controls.dataset.heatmapUrl;
  var POLL_MS = 1500;
  // Every minute of waiting, ask again: the server sends the task anew when its message was lost.
  var POLLS_PER_REQUEST = 40;
  var overlay = null;
  var requested = false;
  var polls = 0;

  function say(message) { status.textContent = message; }
  function setState(state) { controls.dataset.state = state; }

  function apply() {
    slider.disabled = !toggle.checked;
    if (!overlay) return;
    overlay.setOpacity(toggle.checked ? slider.value / 100 : 0);
    setState(toggle.checked ? "shown" : "hidden");
  }

  function fail(body) {
    var error = body && body.error;
    say(error && error.message ? error.message : "The heat map is not available.");
    setState("failed");
    requested = false; // the next toggle asks again (a failed map is queued again)
  }

  // The overlay must join the world after the image itself (item 0, x 0..1), whatever loads first.
  function whenOpen(callback) {
    if (viewer.world.getItemCount() > 0) return callback();
    viewer.addOnceHandler("open", callback);
  }

  function show(pngUrl) {
    whenOpen(function () {
      viewer.addTiledImage({
        // The PNG has the derivative's aspect: the original less its data bar, which sits at the bottom.
        tileSource: { type: "image", url: pngUrl },
        x: 0,
        y: 0,
        width: 1,
        opacity: 0,
        success: function (event) {
          overlay = event.item;
          say("");
          apply();
        },
        error: function () { fail(null); },
      });
    });
  }

  function answer(response) {
    if (response.status === 200 && response.headers.get("Content-Type") === "image/png") return show(url);
    if (response.status === 200 || response.status === 202) {
      return response.json().then(function (body) {
        if (body.status === "ready") return show(body.url);
        say("A worker is computing the heat map…");
        setState("pending");
        setTimeout(poll, POLL_MS);
      });
    }
    return response.json().then(fail, function () { fail(null); });
  }

  function poll() {
    polls += 1;
    if (polls % POLLS_PER_REQUEST === 0) return request();
    fetch(url, { credentials: "same-origin" }).then(answer, function () { fail(null); });
  }

  function request() {
    requested = true;
    say("Asking for the heat map…");
    setState("pending");
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": Portal.csrfToken(), Accept: "application/json" },
    }).then(answer, function () { fail(null); });
  }

  toggle.addEventListener("change", function () {
    if (toggle.checked && !overlay && !requested) request();
    apply();
  });
  slider.addEventListener("input", apply);
})();
