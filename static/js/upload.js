// The new-job form's upload: a file over the server's limit is refused here, before a byte is sent
// (a server answering 413 mid-upload closes the connection, which a browser reports as a bare network
// error); and whatever else stops an upload is said beside the upload box.
(function () {
  "use strict";

  function parts() {
    const input = document.getElementById("upload-file");
    return input ? { input: input, error: document.getElementById("upload-error") } : null;
  }

  function tooLarge(input) {
    const file = input.files && input.files[0];
    const limit = Number(input.dataset.maxBytes);
    if (!file || !limit || file.size <= limit) return null;
    const mb = (file.size / 1048576).toFixed(1);
    return `${file.name} is ${mb} MB, over the ${input.dataset.maxMb} MB upload limit (TUNEDECK_MAX_UPLOAD_MB): nothing was sent`;
  }

  document.addEventListener("change", function (event) {
    const p = parts();
    if (!p || event.target !== p.input) return;
    const message = tooLarge(p.input);
    p.error.textContent = message || "";
    if (message) p.input.value = "";
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    const p = parts();
    if (!p || event.detail.elt.id !== "upload-form") return;
    const message = tooLarge(p.input);
    if (message) {
      p.error.textContent = message;
      event.preventDefault();
    } else {
      p.error.textContent = "";
    }
  });

  document.addEventListener("htmx:sendError", function (event) {
    const p = parts();
    if (p && event.detail.elt.id === "upload-form") {
      p.error.textContent = "The upload did not reach the server (the connection failed): check the file and try again";
    }
  });

  document.addEventListener("htmx:responseError", function (event) {
    const p = parts();
    if (!p || event.detail.elt.id !== "upload-form") return;
    let detail = "";
    try { detail = JSON.parse(event.detail.xhr.responseText).detail; } catch (_) { detail = ""; }
    p.error.textContent = `Upload refused (HTTP ${event.detail.xhr.status})` + (detail ? `: ${detail}` : "");
  });
})();
