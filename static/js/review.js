// Keyboard shortcuts of the review queue. Each key submits one of the page's forms, so the server
// decides what comes next and the page works without JavaScript too.
(function () {
  "use strict";
  var submitted = false;

  function submit(form, button) {
    if (!form || submitted) return;
    submitted = true; // one action per page: a held-down key must not label the next image too
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
    } else {
      return;
    }
    event.preventDefault();
  });
})();
