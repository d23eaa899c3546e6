// The JSON API of segany.serve: fetch wrappers whose errors carry the server's message.
import { requestEnded, requestStarted, unreachable } from "./status.js";

async function send(method, url, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  requestStarted();
  let response;
  try {
    response = await fetch(url, options);
  } catch (_) {
    requestEnded(false);
    throw unreachable(url);
  }
  requestEnded(response.ok);
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

/** A JSON request; resolves to the answer's JSON (null for 204). */
export async function api(method, url, body) {
  const response = await send(method, url, body);
  return response.status === 204 ? null : response.json();
}

/** A request answered with a file (an image, the ONNX decoder, an embedding): its Blob. */
export async function apiBlob(method, url, body) {
  return (await send(method, url, body)).blob();
}
