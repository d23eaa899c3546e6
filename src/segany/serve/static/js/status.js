// Busy and error state: a header indicator while any request runs, readable error messages that
// clear on the next request that succeeds (the server is back), the status line itself, and
// keyboard-focusable list rows.

const $ = (id) => document.getElementById(id);
let pending = 0;
let lastGood = "ready";

/** The status line; an error stays until the next successful request or status. */
export function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = status.title = text;
  status.classList.toggle("error", isError);
  document.body.dataset.error = isError ? "1" : "";
  if (!isError) lastGood = text;
}

function showBusy() {
  document.body.dataset.requests = String(pending);
  $("busy").hidden = pending === 0;
}

/** Called by api.js around every request. */
export function requestStarted() {
  pending += 1;
  showBusy();
}

export function requestEnded(ok) {
  pending = Math.max(0, pending - 1);
  showBusy();
  if (ok && document.body.dataset.error) setStatus(lastGood);
}

/** An Error whose message a labeller can act on, for a failed fetch (no answer at all). */
export function unreachable(url) {
  const error = new Error("cannot reach the server: is segany serve running? Try again once it is back.");
  error.url = url;
  return error;
}

/** Await a promise that is not an api.js request (an image decoding) with the busy indicator on. */
export async function tracked(promise, what) {
  requestStarted();
  try {
    const value = await promise;
    requestEnded(true);
    return value;
  } catch (error) {
    requestEnded(false);
    throw new Error(`${what} could not be shown: ${error.message || error}`);
  }
}

/** Activate ``li`` with a click, Enter or Space, and make it reachable with Tab. */
export function focusable(li, onActivate) {
  li.tabIndex = 0;
  li.addEventListener("click", onActivate);
  li.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== " ") return;
    event.preventDefault();
    event.stopPropagation(); // not the page's Enter (accept)
    onActivate(event);
  });
}
