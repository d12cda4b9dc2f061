// The bulk upload drop zone. Without JavaScript the form is a plain multipart upload; with
// it, files dropped on the zone join the file input, the upload goes through htmx with a
// progress bar, and a refusal (too large, bad files) shows inside the zone.
(function () {
  "use strict";

  var form = document.querySelector("[data-upload-form]");
  if (!form) { return; }
  var zone = form.querySelector("[data-drop-zone]");
  var input = form.querySelector("[data-file-input]");
  var list = form.querySelector("[data-file-list]");
  var progress = form.querySelector("[data-upload-progress]");
  var state = form.querySelector("[data-upload-state]");
  var button = form.querySelector("[data-upload-button]");

  function hasFiles(event) {
    var types = event.dataTransfer && event.dataTransfer.types;
    return types && Array.prototype.indexOf.call(types, "Files") !== -1;
  }

  // A file dropped beside the zone must not make the browser open it and leave the page.
  ["dragover", "drop"].forEach(function (name) {
    window.addEventListener(name, function (event) {
      if (hasFiles(event) && !zone.contains(event.target)) {
        event.preventDefault();
        if (event.dataTransfer) { event.dataTransfer.dropEffect = "none"; }
      }
    });
  });

  function showFiles() {
    list.textContent = "";
    Array.prototype.forEach.call(input.files, function (file) {
      var item = document.createElement("li");
      item.textContent = file.name + " (" + Math.max(1, Math.round(file.size / 1024)) + " KB)";
      list.appendChild(item);
    });
  }

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      if (!hasFiles(event)) { return; }
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("dragging");
    });
  });
  zone.addEventListener("dragleave", function (event) {
    if (!zone.contains(event.relatedTarget)) { zone.classList.remove("dragging"); }
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    zone.classList.remove("dragging");
    var merged = new DataTransfer();
    Array.prototype.forEach.call(input.files, function (file) { merged.items.add(file); });
    Array.prototype.forEach.call(event.dataTransfer.files, function (file) { merged.items.add(file); });
    input.files = merged.files;
    showFiles();
  });
  input.addEventListener("change", showFiles);

  form.addEventListener("htmx:beforeRequest", function () {
    progress.hidden = false;
    progress.value = 0;
    progress.textContent = "0 %";
    state.textContent = "Uploading…";
    button.disabled = true;
  });
  form.addEventListener("htmx:xhr:progress", function (event) {
    if (!event.detail.lengthComputable || !event.detail.total) { return; }
    var percent = Math.round(100 * event.detail.loaded / event.detail.total);
    progress.value = percent;
    progress.textContent = percent + " %";
    if (percent >= 100) { state.textContent = "Reading files…"; }
  });
  form.addEventListener("htmx:afterRequest", function () {
    button.disabled = false;
    if (state.textContent === "Uploading…") { state.textContent = ""; }
  });
  // A refusal (413 too large, 422 bad files) carries its message for the zone: show it.
  form.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status === 413 || status === 422) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
      state.textContent = "";
    }
  });
  form.addEventListener("htmx:responseError", function () {
    state.textContent = "The upload failed. Try again, or upload fewer files at a time.";
  });
}());
