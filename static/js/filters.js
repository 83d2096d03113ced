// Browse: the filter panel (a <details>) is open on a wide screen, where it is the sidebar, and left as the
// server rendered it on a narrow one (closed unless a filter is set), so a phone shows images first.
// Loaded right after the panel, not deferred: it opens before the first paint, without a jump.
(function () {
  var panel = document.getElementById("filter-panel");
  if (!panel || !window.matchMedia) return;
  var wide = window.matchMedia("(min-width: 1001px)");  // portal.css stacks the sidebar at 1000 px
  function follow() { if (wide.matches) panel.open = true; }
  follow();
  if (wide.addEventListener) wide.addEventListener("change", follow);
})();
