// Milo Portal admin behaviour. No inline scripts anywhere (the CSP forbids them): every
// behaviour hangs off data-* attributes through delegated listeners, so it also works on
// fragments that htmx swaps in later.
(function () {
  "use strict";

  var isMac = /Mac|iPhone|iPad/.test(navigator.platform || "");

  // Legacy path for plain-http intranet hosts, where navigator.clipboard does not exist
  // (it is only exposed in secure contexts): select the text and ask for a copy.
  function legacyCopy(input) {
    input.focus();
    input.select();
    try { input.setSelectionRange(0, input.value.length); } catch (e) { /* not a text input */ }
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    return ok ? "copied" : "selected";
  }

  function copyFrom(input) {
    if (window.isSecureContext && navigator.clipboard && navigator.clipboard.writeText) {
      return navigator.clipboard.writeText(input.value).then(
        function () { return "copied"; },
        function () { return legacyCopy(input); }
      );
    }
    return Promise.resolve(legacyCopy(input));
  }

  function showFeedback(button, input, outcome) {
    var feedback = document.querySelector('[data-copy-feedback-for="' + input.id + '"]');
    var original = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", original);
    if (outcome === "copied") {
      button.textContent = "Copied";
      button.classList.add("copied");
      if (feedback) { feedback.textContent = "Copied to the clipboard."; }
      window.setTimeout(function () {
        button.textContent = original;
        button.classList.remove("copied");
        if (feedback) { feedback.textContent = ""; }
      }, 2500);
    } else {
      // Leave the link selected so one key press copies it.
      input.focus();
      input.select();
      if (feedback) {
        feedback.textContent = "The link is selected: press " + (isMac ? "⌘C" : "Ctrl+C") + " to copy it.";
      }
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (button) {
      var input = document.getElementById(button.getAttribute("data-copy-target"));
      if (!input) { return; }
      event.preventDefault();
      copyFrom(input).then(function (outcome) { showFeedback(button, input, outcome); });
      return;
    }
    var closer = event.target.closest("[data-close-panel]");
    if (closer) {
      var panel = document.getElementById(closer.getAttribute("data-close-panel"));
      if (panel) {
        event.preventDefault();
        panel.innerHTML = "";
        var opener = document.getElementById("share-button");
        if (opener) { opener.focus(); }
      }
    }
  });

  // Template editor: remember the last field written in, and insert variables at its cursor.
  var lastInsertTarget = null;
  document.addEventListener("focusin", function (event) {
    if (event.target.hasAttribute && event.target.hasAttribute("data-insert-target")) {
      lastInsertTarget = event.target;
    }
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-insert-var]");
    if (!button) { return; }
    event.preventDefault();
    var field = lastInsertTarget || document.querySelector("textarea[data-insert-target]");
    if (!field) { return; }
    var text = button.getAttribute("data-insert-var");
    var start = field.selectionStart == null ? field.value.length : field.selectionStart;
    var end = field.selectionEnd == null ? start : field.selectionEnd;
    field.value = field.value.slice(0, start) + text + field.value.slice(end);
    field.focus();
    field.setSelectionRange(start + text.length, start + text.length);
    // Let the live preview know, as typing would.
    field.dispatchEvent(new Event("input", { bubbles: true }));
  });

  // Clicking into a copy box selects the whole link.
  document.addEventListener("focusin", function (event) {
    if (event.target.classList && event.target.classList.contains("copy-input")) {
      event.target.select();
    }
  });

  // Confirmation for plain (non-htmx) forms; htmx forms use hx-confirm.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // Candidates list: one box selects every row on the page.
  document.addEventListener("change", function (event) {
    var name = event.target.getAttribute && event.target.getAttribute("data-select-all");
    if (name) {
      var form = event.target.closest("form");
      var boxes = form ? form.querySelectorAll('input[type=checkbox][name="' + name + '"]') : [];
      for (var i = 0; i < boxes.length; i++) { boxes[i].checked = event.target.checked; }
    }
    // Add manually: once the recruiter picks a time zone, the phone number no longer sets it.
    if (event.target.id === "timezone") {
      var touched = document.getElementById("timezone_touched");
      if (touched) { touched.value = "1"; }
    }
  });

  // Add manually: the channel follows the chosen interview's default channel, until the
  // recruiter picks one themselves.
  document.addEventListener("change", function (event) {
    var target = event.target;
    var form = target.closest && target.closest(".candidate-form");
    if (!form) { return; }
    // (on the form: the field check swaps the channel's box, and the select with it)
    if (target.id === "channel") { form.setAttribute("data-channel-touched", "1"); }
    if (target.id === "agent_id" && target.getAttribute("data-channels")) {
      var channel = document.getElementById("channel");
      var defaults = JSON.parse(target.getAttribute("data-channels"));
      if (channel && !form.getAttribute("data-channel-touched") && defaults[target.value]) {
        channel.value = defaults[target.value];
      }
    }
  });

  // New agent form: suggest SMS for entry-level roles and e-mail otherwise, until the
  // recruiter picks a channel themselves.
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.id === "default_channel") {
      target.setAttribute("data-touched", "1");
    }
    var channelId = target.getAttribute && target.getAttribute("data-suggest-channel");
    if (channelId) {
      var channel = document.getElementById(channelId);
      if (channel && !channel.getAttribute("data-touched")) {
        channel.value = target.value === "entry" ? "sms" : "email";
      }
    }
  });
})();
