// Helpers shared by the page scripts (no framework).
window.Portal = (function () {
  "use strict";

  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  // A fraction 0-1 as the pages say it (portal.rates.percent): "87 %", a no-break space before the sign.
  function percent(value) {
    return value === null || value === undefined ? "" : Math.round(value * 100) + "\u00a0%";
  }

  function readJson(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function text(tag, content, className) {
    var element = document.createElement(tag);
    if (content !== undefined && content !== null) element.textContent = content;
    if (className) element.className = className;
    return element;
  }

  // Risky actions ask first: a form with data-confirm="question" submits only when confirmed.
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  }, true);

  // A Copy button (data-copy="id of the element holding the text"): the clipboard API, or, where the page is
  // not a secure context, the text selected for Ctrl+C; its status line says which.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.dataset.copy);
    var status = document.getElementById(button.id + "-status");
    function say(message) { if (status) status.textContent = message; }
    function select() {
      var range = document.createRange();
      range.selectNodeContents(source);
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      say("Selected: press Ctrl+C to copy.");
    }
    if (!navigator.clipboard) { select(); return; }
    navigator.clipboard.writeText(source.textContent.trim()).then(function () { say("Copied."); }, select);
  });

  // Setting a label (or the "not SEM" mark) with a button reloads the page, which leaves focus on <body>: a
  // keyboard user would start again from the top. Remember the control and focus it (or, when its image left the page, the
  // label control that took its place) after the reload.
  var FOCUS_KEY = "portal.focusAfterLabel";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || !form.matches("form[data-label-form]")) return;
    var forms = Array.prototype.slice.call(document.querySelectorAll("form[data-label-form]"));
    sessionStorage.setItem(FOCUS_KEY, JSON.stringify({
      page: location.pathname + location.search,
      action: form.getAttribute("action"),
      value: event.submitter ? event.submitter.value : "",
      index: forms.indexOf(form),
    }));
  });

  function restoreLabelFocus() {
    var saved = JSON.parse(sessionStorage.getItem(FOCUS_KEY) || "null");
    sessionStorage.removeItem(FOCUS_KEY);
    if (!saved || saved.page !== location.pathname + location.search) return;
    var form = document.querySelector('form[data-label-form][action="' + saved.action + '"]');
    var target = form && (form.querySelector('button[value="' + saved.value + '"]') || form.querySelector("select, button"));
    if (!form) {
      var forms = document.querySelectorAll("form[data-label-form]");
      var next = forms[Math.min(saved.index, forms.length - 1)];
      target = next && next.querySelector("select, button");
    }
    if (target) target.focus();
  }
  restoreLabelFocus();

  return { csrfToken: csrfToken, percent: percent, readJson: readJson, text: text };
})();
