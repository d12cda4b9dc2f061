/* Candidate landing page: tell the server that a person is using the page.
 *
 * Mail gateways (Safe Links, Proofpoint, Mimecast) fetch every link in an e-mail, so
 * opening the link is not yet a click. A person touches, types, scrolls or presses a
 * pointer; the first time they do, this posts one beacon and the click is counted.
 * The page works without it: starting the interview counts as a click too. */
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="milo-seen"]');
  if (!meta) { return; }
  var url = meta.getAttribute("content");
  var events = ["pointerdown", "keydown", "touchstart", "scroll"];
  var sent = false;

  function send() {
    if (sent) { return; }
    sent = true;
    events.forEach(function (name) { window.removeEventListener(name, send, true); });
    if (navigator.sendBeacon) {
      navigator.sendBeacon(url, new Blob([], { type: "text/plain" }));
    } else {
      fetch(url, { method: "POST", keepalive: true, credentials: "same-origin" });
    }
  }

  events.forEach(function (name) { window.addEventListener(name, send, { capture: true, passive: true }); });
}());
