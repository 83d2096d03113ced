// Zoomable full-resolution view of one image (OpenSeadragon, vendored): keyboard-reachable controls, a
// scale bar once zoomed (when the pixel size is known), the navigator clear of the instrument's own bar.
(function () {
  "use strict";
  var element = document.getElementById("viewer");
  if (!element || typeof OpenSeadragon === "undefined") return;
  var viewer = OpenSeadragon({
    element: element,
    prefixUrl: element.dataset.prefixUrl,
    tileSources: { type: "image", url: element.dataset.imageUrl, buildPyramid: true },
    showNavigator: true,
    // The instrument's data bar and scale bar sit at the bottom of most micrographs.
    navigatorPosition: "TOP_RIGHT",
    autoHideControls: false, // a control reached with Tab must be visible
    maxZoomPixelRatio: 4,
    visibilityRatio: 1,
    constrainDuringPan: true,
    gestureSettingsMouse: { clickToZoom: false },
  });
  window.imageViewer = viewer;

  // OpenSeadragon's buttons are plain <div>s: give them a role, a name, a tab stop and Enter/Space.
  function keyboardButton(button, action) {
    if (!button || !button.element) return;
    var node = button.element;
    node.tabIndex = 0;
    node.setAttribute("role", "button");
    node.setAttribute("aria-label", button.tooltip || node.title || "");
    node.classList.add("viewer-control");
    node.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" && event.key !== " ") return;
      event.preventDefault();
      event.stopPropagation(); // the canvas must not also take the key
      action();
      viewer.viewport.applyConstraints();
    });
  }
  keyboardButton(viewer.zoomInButton, function () { viewer.viewport.zoomBy(viewer.zoomPerClick); });
  keyboardButton(viewer.zoomOutButton, function () { viewer.viewport.zoomBy(1 / viewer.zoomPerClick); });
  keyboardButton(viewer.homeButton, function () { viewer.viewport.goHome(); });
  keyboardButton(viewer.fullPageButton, function () { viewer.setFullScreen(!viewer.isFullPage()); });

  var pixelNm = parseFloat(element.dataset.pixelSizeNm);
  var originalWidth = parseFloat(element.dataset.imageWidth);
  if (!(pixelNm > 0) || !(originalWidth > 0)) return;
  var bar = document.createElement("div");
  bar.className = "scale-bar";
  bar.id = "viewer-scale-bar";
  bar.hidden = true;
  bar.appendChild(document.createElement("span"));
  bar.appendChild(document.createElement("div"));
  viewer.addControl(bar, { anchor: OpenSeadragon.ControlAnchor.BOTTOM_LEFT });

  // 1, 2 or 5 times a power of ten, in the unit that keeps the number small.
  function niceLength(nm) {
    var power = Math.pow(10, Math.floor(Math.log10(nm)));
    var step = [5, 2, 1].find(function (s) { return s * power <= nm; }) || 1;
    return step * power;
  }
  function label(nm) {
    if (nm >= 1e6) return nm / 1e6 + " mm";
    if (nm >= 1e3) return nm / 1e3 + " µm";
    return nm + " nm";
  }
  // Shown only once zoomed in: at the home view the instrument's own scale bar is on screen and right.
  function updateBar() {
    var item = viewer.world.getItemAt(0);
    if (!item) return;
    var zoomed = viewer.viewport.getZoom(true) > viewer.viewport.getHomeZoom() * 1.05;
    bar.hidden = !zoomed;
    if (!zoomed) return;
    var screenPerPixel = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(1, 0)).x -
      item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0)).x;
    var nmPerScreenPixel = (pixelNm * originalWidth / item.source.dimensions.x) / screenPerPixel;
    var length = niceLength(nmPerScreenPixel * 150);
    bar.querySelector("div").style.width = (length / nmPerScreenPixel).toFixed(1) + "px";
    bar.querySelector("span").textContent = label(Number(length.toPrecision(3)));
  }
  viewer.addHandler("animation", updateBar);
  viewer.addHandler("open", updateBar);
  viewer.addHandler("resize", updateBar);
})();
