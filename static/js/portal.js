// Helpers shared by the page scripts (no framework).
window.Portal = (function () {
  "use strict";

  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function percent(value) {
    return value === null || value === undefined ? "" : Math.round(value * 100) + "%";
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

  return { csrfToken: csrfToken, percent: percent, readJson: readJson, text: text };
})();
