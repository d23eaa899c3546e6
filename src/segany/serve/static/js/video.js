// segany video: click objects on any frame, track them through the video, correct, accept, export.
// Talks to /api/videos of segany.serve (serve/videos.py); masks are COCO RLE drawn with masks.js.
import { api, apiBlob } from "./api.js";
import { colorOf, css, overlay } from "./masks.js";
import { setStatus } from "./status.js";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const DRAG_PIXELS = 5; // a press that moves further (screen pixels) is a box, not a click
const MAX_OBJECT = 255; // DAVIS palette PNGs hold object ids 1..255
const KEPT_FRAMES = 24; // decoded frames kept for scrubbing (a 1080p frame is 8 MB)
const POLL_MS = 250;
const MAX_BACKING = 8; // canvas pixels per frame pixel at most (small frames shown enlarged)

const state = {
  videos: [],
  video: null, // the server's detail of the open video
  frame: 0,
  obj: 1, // the object that clicks go to
  extra: [], // object ids started on the page, without a prompt yet
  bitmaps: new Map(), // frame -> ImageBitmap (most recent last)
  masks: new Map(), // frame -> [{obj_id, rle, area, bbox}]
  drag: null,
  polling: false,
  backing: 1, // canvas pixels per frame pixel
  sequence: 0, // ignores answers for frames no longer shown
};

// ---- status -------------------------------------------------------------------------------------

function busy(text) {
  $("spinner-text").textContent = text || "";
  $("spinner").hidden = !text;
  document.body.dataset.busy = text ? "1" : "";
}

const fail = (error) => { busy(""); setStatus(error.message || String(error), true); };

async function work(text, action) {
  // one request with a visible busy state; its error is shown, a later success clears it
  busy(text);
  try {
    const result = await action();
    setStatus("ready");
    return result;
  } finally {
    busy("");
  }
}

// ---- objects and prompts -------------------------------------------------------------------------

const prompts = () => (state.video ? state.video.prompts : []);
const promptOf = (obj, frame) => prompts().find((p) => p.obj_id === obj && p.frame === frame) || null;

function objectIds() {
  const ids = new Set([...(state.video ? state.video.object_ids : []), ...state.extra, state.obj]);
  return [...ids].sort((a, b) => a - b);
}

// ---- drawing ------------------------------------------------------------------------------------

function draw() {
  // drawn in frame pixels, on a canvas of `backing` canvas pixels per frame pixel
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const bitmap = state.bitmaps.get(state.frame);
  if (!bitmap || !state.video) return;
  const { width, height } = state.video;
  ctx.setTransform(state.backing, 0, 0, state.backing, 0, 0);
  ctx.drawImage(bitmap, 0, 0, width, height);
  for (const m of state.masks.get(state.frame) || []) {
    ctx.drawImage(overlay(m.rle, colorOf(m.obj_id), m.obj_id === state.obj ? 0.55 : 0.3), 0, 0, width, height);
  }
  const scale = width / canvas.getBoundingClientRect().width || 1; // frame pixels per screen pixel
  ctx.lineWidth = 2 * scale;
  for (const p of prompts().filter((q) => q.frame === state.frame)) {
    ctx.globalAlpha = p.obj_id === state.obj ? 1 : 0.5;
    if (p.box) {
      ctx.strokeStyle = css(colorOf(p.obj_id));
      ctx.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]);
    }
    p.points.forEach(([x, y], i) => {
      ctx.beginPath();
      ctx.arc(x, y, 6 * scale, 0, 2 * Math.PI);
      ctx.fillStyle = p.labels[i] === 1 ? "#00c853" : "#e53935";
      ctx.fill();
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    });
  }
  ctx.globalAlpha = 1;
  if (state.drag && state.drag.moved) {
    const [x0, y0, x1, y1] = state.drag.box;
    ctx.strokeStyle = "#ffab00";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
  document.body.dataset.shown = String(state.frame);
}

function fitCanvas() {
  // the frame as large as the stage allows beside the scrubber, aspect kept; a small frame shown
  // enlarged gets a canvas of whole canvas pixels per frame pixel, so its pixels stay sharp and
  // the click markers round
  if (!state.video) return;
  const { width, height } = state.video;
  const stage = $("stage");
  const below = $("scrubber").offsetHeight + $("hint").offsetHeight + 40;
  const zoom = Math.max(0.05, Math.min((stage.clientWidth - 24) / width, (stage.clientHeight - below) / height));
  canvas.style.width = `${Math.floor(width * zoom)}px`;
  canvas.style.height = `${Math.floor(height * zoom)}px`;
  state.backing = Math.max(1, Math.min(MAX_BACKING, Math.floor(zoom)));
  canvas.width = width * state.backing;
  canvas.height = height * state.backing;
  ctx.imageSmoothingEnabled = zoom < 2;
}

function listRow(list, { color, text, detail, selected, onClick }) {
  // a focusable row from video.html's template: swatch, name, detail
  const li = $("row").content.firstElementChild.cloneNode(true);
  const [swatch, label, more] = li.children;
  swatch.hidden = !color;
  if (color) swatch.style.background = css(color);
  label.textContent = text;
  more.textContent = detail || "";
  li.classList.toggle("selected", Boolean(selected));
  li.addEventListener("click", onClick);
  li.addEventListener("keydown", (event) => { if (event.key === "Enter") onClick(); });
  list.append(li);
}

function renderPanels() {
  const video = state.video;
  $("videos").replaceChildren();
  state.videos.forEach((v) => listRow($("videos"), {
    text: v.name, detail: v.accepted ? "accepted" : (v.objects ? `${v.objects} obj` : ""),
    selected: video && v.id === video.id, onClick: () => openVideo(v.id).catch(fail),
  }));
  $("objects").replaceChildren();
  objectIds().forEach((id, i) => {
    const frames = prompts().filter((p) => p.obj_id === id).map((p) => p.frame);
    listRow($("objects"), {
      color: colorOf(id), text: `object ${id}${i < 9 ? ` (${i + 1})` : ""}`,
      detail: frames.length ? `frame${frames.length > 1 ? "s" : ""} ${frames.join(", ")}` : "no prompt yet",
      selected: id === state.obj, onClick: () => { state.obj = id; renderPanels(); draw(); },
    });
  });
  const n = video ? video.frames : 0;
  $("frame").max = String(Math.max(0, n - 1));
  $("frame").value = String(state.frame);
  $("frame-label").textContent = video ? `frame ${state.frame} / ${n - 1}` : "";
  const marks = [...new Set(prompts().map((p) => p.frame))]; // ticks on the slider where prompts are
  $("prompted").replaceChildren(...marks.map((f) => Object.assign(document.createElement("option"), { value: String(f) })));
  const job = video ? video.track : { status: "idle", done: 0, total: 1 };
  const running = job.status === "queued" || job.status === "running";
  $("progress").max = job.total || 1;
  $("progress").value = running || job.status === "done" ? job.done : 0;
  let text = "";
  if (running) text = `tracking: ${job.done} / ${job.total} frames`;
  else if (job.status === "failed") text = `tracking failed: ${job.error}`;
  else if (!video || !video.prompts.length) text = "no prompts yet";
  else if (!video.tracked) text = "prompts changed: Track to update every frame";
  else if (video.accepted_objects.length) text = `tracked; accepted objects ${video.accepted_objects.join(", ")}`;
  else text = "tracked: scrub to check, correct, then Accept";
  $("track-state").textContent = text;
  $("track-state").classList.toggle("error", job.status === "failed");
  document.body.dataset.track = job.status;
  $("track").disabled = running || !video || !video.prompts.length;
  $("stop").disabled = !running;
  $("accept").disabled = running || !video || !video.tracked;
  $("clear-frame").disabled = running || !promptOf(state.obj, state.frame);
  $("delete-object").disabled = running || !(video && video.object_ids.includes(state.obj));
  for (const [id, kind] of [["export-davis", "davis"], ["export-coco", "coco"]]) {
    const ready = Boolean(video && video.accepted);
    const link = $(id);
    link.classList.toggle("disabled", !ready);
    link.setAttribute("aria-disabled", String(!ready));
    if (ready) link.href = `/api/videos/${video.id}/export/${kind}`;
    else link.removeAttribute("href");
  }
}

// ---- videos and frames --------------------------------------------------------------------------

async function loadVideos() {
  state.videos = await api("GET", "/api/videos");
  if (!state.videos.length) {
    setStatus("no videos found in the --videos folder", true);
    renderPanels();
    return;
  }
  await openVideo(state.videos[0].id);
}

async function openVideo(id) {
  const video = await work("opening the video…", () => api("GET", `/api/videos/${id}`));
  state.video = video;
  state.frame = 0;
  state.extra = [];
  state.obj = video.object_ids[0] || 1;
  state.bitmaps.clear();
  state.masks.clear();
  fitCanvas();
  renderPanels();
  await showFrame(0);
  if (video.track.status === "queued" || video.track.status === "running") pollTrack();
}

async function refreshVideo() {
  const video = state.video;
  const fresh = await api("GET", `/api/videos/${video.id}`);
  if (state.video !== video) return; // another video was opened meanwhile
  state.video = fresh;
  const summary = state.videos.find((v) => v.id === video.id);
  if (summary) Object.assign(summary, { objects: state.video.objects, accepted: state.video.accepted });
  state.extra = state.extra.filter((id) => !state.video.object_ids.includes(id));
  renderPanels();
}

async function frameBitmap(video, frame) {
  let bitmap = state.bitmaps.get(frame);
  if (!bitmap) {
    bitmap = await createImageBitmap(await apiBlob("GET", `/api/videos/${video.id}/frames/${frame}`));
    state.bitmaps.set(frame, bitmap);
    if (state.bitmaps.size > KEPT_FRAMES) {
      const oldest = state.bitmaps.keys().next().value;
      state.bitmaps.get(oldest).close();
      state.bitmaps.delete(oldest);
    }
  }
  return bitmap;
}

async function frameMasks(video, frame) {
  let masks = state.masks.get(frame);
  if (!masks) {
    masks = (await api("GET", `/api/videos/${video.id}/frames/${frame}/masks`)).objects;
    state.masks.set(frame, masks);
  }
  return masks;
}

async function showFrame(frame) {
  const video = state.video;
  if (!video) return;
  frame = Math.max(0, Math.min(video.frames - 1, frame));
  state.frame = frame;
  const sequence = ++state.sequence;
  renderPanels();
  await Promise.all([frameBitmap(video, frame), frameMasks(video, frame)]);
  if (sequence !== state.sequence || state.video !== video) return;
  draw();
  if (frame + 1 < video.frames) frameBitmap(video, frame + 1).catch(() => {}); // scrubbing on is smooth
}

const goTo = (frame) => showFrame(frame).catch(fail);

// ---- prompts -------------------------------------------------------------------------------------

function tracking() {
  const job = state.video && state.video.track;
  return Boolean(job && (job.status === "queued" || job.status === "running"));
}

async function sendPrompt(body) {
  const video = state.video;
  await work(`segmenting object ${body.obj_id}…`, async () => {
    const answer = await api("POST", `/api/videos/${video.id}/prompts`, body);
    if (state.video !== video) return; // another video was opened meanwhile
    state.masks.set(answer.frame, answer.objects);
    await refreshVideo(); // the prompts the next click adds to
    draw();
  });
}

function refuseWhileTracking() {
  // one prompt change at a time: each builds on the prompts the last one left
  if (tracking()) setStatus("tracking: wait for it or Stop it before clicking", true);
  else if (document.body.dataset.busy) setStatus("wait: the last click is still being segmented", true);
  return !state.video || tracking() || Boolean(document.body.dataset.busy);
}

function addPoint(x, y, label) {
  if (refuseWhileTracking()) return;
  const old = promptOf(state.obj, state.frame);
  const body = {
    frame: state.frame, obj_id: state.obj,
    points: [...(old ? old.points : []), [x, y]], labels: [...(old ? old.labels : []), label],
  };
  if (old && old.box) body.box = old.box;
  sendPrompt(body).catch(fail);
}

function addBox(box) {
  if (refuseWhileTracking()) return;
  sendPrompt({ frame: state.frame, obj_id: state.obj, box }).catch(fail);
}

async function clearPrompt() {
  if (refuseWhileTracking()) return;
  const video = state.video;
  await work("removing the prompt…", async () => {
    const answer = await api("DELETE", `/api/videos/${video.id}/prompts?obj_id=${state.obj}&frame=${state.frame}`);
    if (state.video !== video) return;
    state.masks.set(answer.frame, answer.objects);
    await refreshVideo();
    draw();
  });
}

function undoClick() {
  const old = promptOf(state.obj, state.frame);
  if (!old || refuseWhileTracking()) return;
  if (old.points.length > 1 || (old.points.length === 1 && old.box)) {
    const body = { frame: old.frame, obj_id: old.obj_id, points: old.points.slice(0, -1), labels: old.labels.slice(0, -1) };
    if (old.box) body.box = old.box;
    sendPrompt(body).catch(fail);
  } else {
    clearPrompt().catch(fail);
  }
}

function newObject() {
  const ids = objectIds();
  const next = ids.length ? ids[ids.length - 1] + 1 : 1;
  if (next > MAX_OBJECT) { setStatus(`at most ${MAX_OBJECT} objects per video`, true); return; }
  if (!state.video || !state.video.object_ids.includes(state.obj)) { // the current one is still unused
    setStatus(`object ${state.obj} has no prompt yet: click on it first`);
    return;
  }
  state.extra.push(next);
  state.obj = next;
  renderPanels();
  draw();
}

async function deleteObject() {
  const video = state.video;
  const obj = state.obj;
  if (!confirm(`Delete object ${obj} on every frame?`)) return;
  await work(`deleting object ${obj}…`, async () => {
    await api("DELETE", `/api/videos/${video.id}/objects/${obj}`);
    if (state.video !== video) return;
    state.masks.clear();
    await refreshVideo();
  });
  if (state.video !== video) return;
  state.obj = state.video.object_ids[0] || 1;
  await showFrame(state.frame);
}

// ---- tracking -----------------------------------------------------------------------------------

async function startTrack() {
  const video = state.video;
  if (!video || tracking() || !video.prompts.length) return;
  video.track = await api("POST", `/api/videos/${video.id}/track`);
  renderPanels();
  pollTrack();
}

async function pollTrack() {
  // the job's progress until it ends; frames it rewrote are fetched again
  if (state.polling) return;
  state.polling = true;
  const id = state.video.id;
  const current = () => Boolean(state.video && state.video.id === id);
  let done = -1;
  try {
    while (current()) {
      const job = await api("GET", `/api/videos/${id}/track`);
      if (!current()) break;
      state.video.track = job;
      if (job.done !== done) {
        done = job.done;
        state.masks.clear();
        await showFrame(state.frame);
      }
      renderPanels();
      if (job.status !== "queued" && job.status !== "running") break;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    if (current()) {
      await refreshVideo();
      state.masks.clear();
      await showFrame(state.frame);
      const job = state.video.track;
      if (job.status === "failed") setStatus(`tracking failed: ${job.error}`, true);
      else setStatus(job.status === "done" ? `tracked ${state.video.frames} frames` : `tracking ${job.status}`);
    }
  } finally {
    state.polling = false;
  }
}

async function stopTrack() {
  const video = state.video;
  video.track = await api("DELETE", `/api/videos/${video.id}/track`);
  renderPanels();
}

async function acceptTracks() {
  const video = state.video;
  if (!video || !video.tracked || tracking()) return;
  await work("saving the tracks…", async () => {
    await api("POST", `/api/videos/${video.id}/accept`);
    await refreshVideo();
  });
  setStatus(`accepted ${state.video.accepted_objects.length} object(s): ready to export`);
}

// ---- input --------------------------------------------------------------------------------------

function framePoint(event) {
  const rect = canvas.getBoundingClientRect();
  const { width, height } = state.video;
  const x = ((event.clientX - rect.left) / rect.width) * width;
  const y = ((event.clientY - rect.top) / rect.height) * height;
  return [Math.max(0, Math.min(width, x)), Math.max(0, Math.min(height, y))];
}

canvas.addEventListener("contextmenu", (event) => event.preventDefault());
canvas.addEventListener("mousedown", (event) => {
  if (!state.video || event.button === 1) return;
  const [x, y] = framePoint(event);
  state.drag = { start: [x, y], screen: [event.clientX, event.clientY], box: [x, y, x, y], moved: false,
    label: event.button === 2 || event.shiftKey ? 0 : 1 };
});
window.addEventListener("mousemove", (event) => {
  const drag = state.drag;
  if (!drag) return;
  if (Math.hypot(event.clientX - drag.screen[0], event.clientY - drag.screen[1]) > DRAG_PIXELS) drag.moved = true;
  const [x, y] = framePoint(event);
  drag.box = [Math.min(drag.start[0], x), Math.min(drag.start[1], y), Math.max(drag.start[0], x), Math.max(drag.start[1], y)];
  if (drag.moved) draw();
});
window.addEventListener("mouseup", () => {
  const drag = state.drag;
  if (!drag) return;
  state.drag = null;
  if (drag.moved && drag.label === 1) addBox(drag.box);
  else addPoint(drag.start[0], drag.start[1], drag.label);
});

$("frame").addEventListener("input", () => goTo(Number($("frame").value)));
$("prev").addEventListener("click", () => goTo(state.frame - 1));
$("next").addEventListener("click", () => goTo(state.frame + 1));
$("new-object").addEventListener("click", newObject);
$("clear-frame").addEventListener("click", () => clearPrompt().catch(fail));
$("delete-object").addEventListener("click", () => deleteObject().catch(fail));
$("track").addEventListener("click", () => startTrack().catch(fail));
$("stop").addEventListener("click", () => stopTrack().catch(fail));
$("accept").addEventListener("click", () => acceptTracks().catch(fail));
window.addEventListener("resize", () => { fitCanvas(); draw(); });

window.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement && event.target.type !== "range") return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const moves = ["ArrowRight", "ArrowLeft", "Home", "End"];
  if (event.target === $("frame") && moves.includes(event.key)) return; // the slider moves itself
  const step = event.shiftKey ? 10 : 1;
  const keys = {
    ArrowRight: () => goTo(state.frame + step),
    ArrowLeft: () => goTo(state.frame - step),
    Home: () => goTo(0),
    End: () => goTo(state.video ? state.video.frames - 1 : 0),
    n: newObject, t: () => startTrack().catch(fail), a: () => acceptTracks().catch(fail), z: undoClick,
  };
  const digit = Number(event.key);
  if (Number.isInteger(digit) && digit >= 1 && digit <= 9 && objectIds()[digit - 1] !== undefined) {
    state.obj = objectIds()[digit - 1];
    renderPanels();
    draw();
    return;
  }
  const action = keys[event.key.length === 1 ? event.key.toLowerCase() : event.key];
  if (!action) return;
  event.preventDefault();
  action();
});

loadVideos().catch(fail);
