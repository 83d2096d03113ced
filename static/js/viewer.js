// Zoomable full-resolution view of one image (OpenSeadragon, vendored).
(function () {
  "use strict";
  var element = document.getElementById("viewer");
  if (!element || typeof OpenSeadragon === "undefined") return;
  OpenSeadragon({
    element: element,
    prefixUrl: element.dataset.prefixUrl,
    tileSources: { type: "image", url: element.dataset.imageUrl, buildPyramid: true },
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    maxZoomPixelRatio: 4,
    visibilityRatio: 1,
    constrainDuringPan: true,
    gestureSettingsMouse: { clickToZoom: false },
  });
})();
