// segany annotator: click → mask, accept with a category, review automatic proposals.
// Plain browser JavaScript talking to the JSON API of segany.serve (no build step).
import { api, apiBlob } from "./api.js";
import { askForCategory, byHotkey, categoryColor, choose, chosenCategory, initCategories, refreshCategories } from "./categories.js";
import { createEditor } from "./edit.js";
import { css, overlay, overlayCache } from "./masks.js";
import { drawPolygons } from "./polygons.js";
import { annotated, buildImageList, renderProgress, toggleState, unfinished } from "./progress.js";
import { drawFocused, everythingBody, proposalText, setGeneratorOptions, showFocused, view as reviewView, withColours } from "./review.js";
import { focusable, setStatus, tracked } from "./status.js";
import { createUndoable } from "./undoable.js";
import { View, ZOOM_STEP } from "./view.js";
import { HoverPreview } from "./hover.js";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const view = new View(canvas);
reviewView.centerOn = (bbox) => { view.centerOn(bbox); draw(); }; // the focused proposal, in sight
window.seganyView = view; // tests: toScreen(x, y) / toImage(clientX, clientY), scale
const hover = new HoverPreview(() => draw());
window.seganyHover = hover; // tests: .last, the preview drawn
const DRAG_PIXELS = 5; // a press that moves further than this (screen pixels) is a box, not a click
const ACCENT = [255, 40, 200]; // the mask being edited: magenta, rare in photographs

const emptyStep = () => ({ points: [], labels: [], box: null, result: null, selected: 0 });

const state = {
  images: [],
  index: -1,
  image: null, // {id, file_name, width, height}
  bitmap: null,
  steps: [emptyStep()], // prompt history for the object being segmented; steps[cursor] is shown
  cursor: 0,
  annotations: [],
  selected: null, // id of the selected annotation
  edit: null, // {id, rle}: the selected annotation's working mask (js/edit.js)
  proposals: [],
  focused: 0, // index of the focused proposal
  drag: null,
  pan: null, // [clientX, clientY] of the last pointer position while panning
  preview: null, // {id, bitmap}: the image with annotation #id's object removed, shown instead of the image
  sequence: 0, // ignores answers to superseded requests
};

// ---- status ---------------------------------------------------------------------------------------

function showSpinner(text) {
  $("spinner-text").textContent = text;
  $("spinner").hidden = !text;
  document.body.dataset.busy = text ? "1" : "";
}

const fail = (error) => setStatus(error.message || String(error), true);

// ---- drawing ------------------------------------------------------------------------------------

const step = () => state.steps[state.cursor];
const candidates = () => (step().result ? step().result.candidates : []);
const candidate = () => candidates()[step().selected] || null;

function draw() {
  view.begin(ctx);
  if (!state.bitmap) return;
  const { width, height } = state.image;
  if (state.preview) {
    ctx.drawImage(state.preview.bitmap, 0, 0, width, height);
    return;
  }
  ctx.drawImage(state.bitmap, 0, 0, width, height);
  for (const ann of state.annotations) {
    const selected = ann.id === state.selected;
    if (selected && editor.active()) continue; // its working mask is drawn below
    ctx.drawImage(overlay(ann.segmentation, categoryColor(ann.category_id), selected ? 0.6 : 0.3), 0, 0);
  }
  state.proposals.forEach((proposal, i) => {
    ctx.drawImage(overlay(proposal.rle, proposal.color, i === state.focused ? 0.6 : 0.2), 0, 0);
  });
  const chosen = editor.active() ? null : candidate();
  if (chosen) ctx.drawImage(overlay(chosen.rle, ACCENT, 0.5), 0, 0);
  else if (hover.layer && !editor.active()) ctx.drawImage(hover.layer, 0, 0);
  const scale = 1 / view.scale; // image pixels per screen pixel: markers keep their screen size
  editor.drawOver(ctx, scale);
  drawFocused(ctx, state.proposals[state.focused], scale);
  drawPolygons(ctx, state.image.id, state.annotations.find((a) => a.id === state.selected), scale, draw);
  const { points, labels, box } = editor.active() ? emptyStep() : step();
  ctx.lineWidth = 2 * scale;
  if (box) drawBox(box, "#00c853");
  if (state.drag && state.drag.moved) drawBox(state.drag.box, "#ffab00");
  points.forEach(([x, y], i) => {
    ctx.beginPath();
    ctx.arc(x, y, 6 * scale, 0, 2 * Math.PI);
    ctx.fillStyle = labels[i] === 1 ? "#00c853" : "#e53935";
    ctx.fill();
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  });
}

function fitCanvas() {
  // the canvas fills the stage in device pixels; the view keeps the image fitted until zoomed or panned
  view.resize();
  showZoom();
}

const showZoom = () => { $("zoom").textContent = `${Math.round(view.scale * 100)}%`; };

function toggleHover() {
  const on = hover.toggle();
  $("hover").textContent = `Hover: ${on ? "on" : "off"} (H)`;
  setStatus(`hover preview ${on ? "on" : "off"}`);
}

function zoomed(change) {
  return () => {
    if (!state.image) return;
    change();
    showZoom();
    draw();
  };
}

function drawBox([x0, y0, x1, y1], color) {
  ctx.strokeStyle = color;
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
}

function row(list, { color, text, key, selected, onClick }) {
  const li = document.createElement("li");
  if (color) {
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = css(color);
    li.append(swatch);
  }
  const label = document.createElement("span");
  label.className = "grow";
  label.textContent = text;
  li.append(label);
  if (key) {
    const hint = document.createElement("span");
    hint.className = "key";
    hint.textContent = key;
    li.append(hint);
  }
  li.classList.toggle("selected", Boolean(selected));
  focusable(li, onClick);
  list.append(li);
}

function renderPanels() {
  const list = $("candidates");
  list.replaceChildren();
  candidates().forEach((c, i) => row(list, {
    color: i === step().selected ? ACCENT : [200, 205, 215],
    text: `score ${c.score.toFixed(3)} · ${c.area} px`,
    key: String(i + 1),
    selected: i === step().selected,
    onClick: () => selectCandidate(i),
  }));
  $("accept").disabled = !candidate();

  const annotations = $("annotations");
  annotations.replaceChildren();
  state.annotations.forEach((ann) => row(annotations, {
    color: categoryColor(ann.category_id),
    text: `#${ann.id} ${ann.category} · ${ann.area} px`,
    selected: ann.id === state.selected,
    onClick: () => editor.select(ann.id),
  }));
  $("annotation-count").textContent = state.annotations.length ? `(${state.annotations.length})` : "";
  $("relabel").disabled = $("delete").disabled = state.selected === null;
  $("remove-preview").disabled = state.selected === null && !state.preview;
  $("remove-preview").textContent = state.preview ? "Back to the image" : "Remove preview";
  editor.render();

  $("proposals-panel").hidden = state.proposals.length === 0;
  const proposals = $("proposals");
  proposals.replaceChildren();
  state.proposals.forEach((p, i) => row(proposals, {
    color: p.color,
    text: proposalText(p),
    selected: i === state.focused,
    onClick: () => { state.focused = i; renderPanels(); draw(); },
  }));
  $("proposal-count").textContent = `(${state.proposals.length})`;
  showFocused(state.proposals[state.focused], state.focused);
  renderProgress(state.images, state.index);
}

function refresh() {
  renderPanels();
  draw();
}

// ---- images and embeddings --------------------------------------------------------------------

async function loadImages() {
  const [info, images] = await Promise.all([api("GET", "/api/info"), api("GET", "/api/images")]);
  $("model").textContent = $("model").title = `model ${info.model} · ${info.images} images`;
  $("find-form").hidden = !info.detector;
  setGeneratorOptions(info.generator_options);
  state.images = images;
  buildImageList(images, (i) => openImage(i).catch(fail));
  await refreshCategories();
  if (images.length) await openImage(0);
  else setStatus("no images found in the folder", true);
}

async function openImage(index) {
  if (index < 0 || index >= state.images.length) return;
  const summary = state.images[index];
  const sequence = ++state.sequence;
  editor.leave();
  state.preview = null;
  const [image, annotations] = await Promise.all([
    api("GET", `/api/images/${summary.id}`),
    api("GET", `/api/images/${summary.id}/annotations`),
  ]);
  const bitmap = new Image();
  bitmap.src = `/api/images/${summary.id}/file`;
  await tracked(bitmap.decode(), `image ${summary.file_name}`);
  if (sequence !== state.sequence) return;
  // the index moves only once the image is there: a failed N leaves it where it was
  Object.assign(state, { index, image, bitmap, annotations, steps: [emptyStep()], cursor: 0, selected: null, proposals: [] });
  overlayCache.clear();
  $("hint").textContent = image.file_name;
  view.setImage(image.width, image.height);
  fitCanvas();
  hover.setImage(image);
  refresh();
  await ensureEmbedding(image.id);
  hover.ready(image);
}

async function ensureEmbedding(imageId) {
  let status = await api("POST", `/api/images/${imageId}/embedding`);
  const started = performance.now();
  if (status.status === "computing") {
    showSpinner("computing the image embedding…");
    setStatus("computing the image embedding…");
  }
  document.body.dataset.embedding = status.status;
  while (status.status === "computing" && state.image && state.image.id === imageId) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    status = await api("GET", `/api/images/${imageId}/embedding`);
  }
  if (!state.image || state.image.id !== imageId) return;
  showSpinner("");
  document.body.dataset.embedding = status.status;
  if (status.status === "failed") setStatus(`embedding failed: ${status.error}`, true);
  else setStatus(`ready (embedding ${Math.round(performance.now() - started)} ms) — click on an object`);
}

// ---- prompts → masks --------------------------------------------------------------------------

function pushStep(change) {
  const previous = step();
  const before = prompts();
  const next = { ...emptyStep(), points: [...previous.points], labels: [...previous.labels], box: previous.box, ...change };
  state.steps = state.steps.slice(0, state.cursor + 1);
  state.steps.push(next);
  state.cursor += 1;
  recordPrompts("prompt", before);
  draw();
  predict(next, previous.result ? previous.result.candidates[previous.selected] : null).catch((error) => {
    dropStep(next); // a prompt whose prediction failed is not left on the image
    fail(error);
  });
}

function dropStep(target) {
  const at = state.steps.indexOf(target);
  if (at <= 0) return;
  state.steps.splice(at, 1);
  if (state.cursor >= at) state.cursor -= 1;
  refresh();
}

async function predict(target, previous, useLogits = true) {
  if (!state.image) return;
  const imageId = state.image.id;
  const body = {
    points: target.points,
    labels: target.labels,
    box: target.box,
    multimask: target.points.length === 1 && !target.box,
    logits: useLogits && previous ? previous.logits : null,
  };
  const sent = performance.now();
  let result;
  try {
    result = await api("POST", `/api/images/${imageId}/predict`, body);
  } catch (error) {
    if (body.logits && /logits handle/.test(error.message)) return predict(target, previous, false);
    throw error;
  }
  if (!state.image || state.image.id !== imageId) return;
  target.result = result;
  target.selected = 0;
  const roundTrip = performance.now() - sent;
  $("timing").textContent =
    `decoder ${result.decoder_ms.toFixed(0)} ms · server ${result.total_ms.toFixed(0)} ms · round trip ${roundTrip.toFixed(0)} ms`;
  if (target === step()) refresh();
}

function selectCandidate(i) {
  if (i < candidates().length) {
    step().selected = i;
    refresh();
  }
}

async function undo() {
  const entry = await history.undo();
  setStatus(entry ? `undid ${entry.label}` : "nothing to undo");
}

async function redo() {
  const entry = await history.redo();
  setStatus(entry ? `redid ${entry.label}` : "nothing to redo");
}

function clearPrompts() {
  state.steps = [emptyStep()];
  state.cursor = 0;
  refresh();
}

function toImage(event) {
  // image coordinates of a mouse event through the view (zoom, pan), clamped to the image
  const [x, y] = view.toImage(event.clientX, event.clientY);
  return [Math.min(Math.max(x, 0), view.width), Math.min(Math.max(y, 0), view.height)];
}

let spaceHeld = false; // Space + drag pans
canvas.addEventListener("contextmenu", (event) => event.preventDefault());
canvas.addEventListener("mousedown", (event) => {
  if (!state.image) return;
  event.preventDefault(); // no text selection or image dragging; keys go to the page, not an input
  if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
  hover.clear();
  if (event.button === 1 || spaceHeld) {
    state.pan = [event.clientX, event.clientY];
    canvas.style.cursor = "grabbing";
    return;
  }
  if (event.ctrlKey || event.metaKey) { // ctrl/cmd+click: select the annotation under the cursor for editing
    editor.select(editor.annotationAt(toImage(event))?.id ?? null);
    return;
  }
  const inside = view.contains(view.toImage(event.clientX, event.clientY));
  state.drag = { start: toImage(event), screen: [event.clientX, event.clientY], button: event.button, shift: event.shiftKey, moved: false, inside };
  editor.down(state.drag);
});
canvas.addEventListener("wheel", (event) => {
  if (!state.image) return;
  event.preventDefault();
  const factor = Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.0015)); // lines or pixels
  zoomed(() => view.zoomAt(factor, event.clientX, event.clientY))();
}, { passive: false });
canvas.addEventListener("mousemove", (event) => {
  if (state.drag || state.pan || !state.image) return;
  const point = view.toImage(event.clientX, event.clientY);
  if (view.contains(point) && !step().points.length && !step().box && !editor.active() && !state.preview) hover.move(point);
  else hover.clear();
});
canvas.addEventListener("mouseleave", () => hover.clear());
window.addEventListener("mousemove", (event) => {
  if (state.pan) {
    view.panBy(event.clientX - state.pan[0], event.clientY - state.pan[1]);
    state.pan = [event.clientX, event.clientY];
    draw();
    return;
  }
  if (editor.move(event)) return; // painting with the brush or the eraser
  const drag = state.drag;
  if (!drag || drag.button !== 0) return;
  drag.moved = drag.moved || Math.hypot(event.clientX - drag.screen[0], event.clientY - drag.screen[1]) > DRAG_PIXELS;
  if (!drag.moved) return;
  const [x, y] = toImage(event);
  const [x0, y0] = drag.start;
  drag.box = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
  draw();
});
window.addEventListener("mouseup", (event) => {
  if (state.pan) {
    state.pan = null;
    canvas.style.cursor = "";
    return;
  }
  const drag = state.drag;
  if (!drag) return;
  state.drag = null;
  if (editor.up(drag)) return; // a click, box or stroke on the selected annotation
  if (drag.moved) {
    pushStep({ box: drag.box });
  } else if (drag.inside) {
    const background = drag.button === 2 || drag.shift;
    pushStep({ points: [...step().points, drag.start], labels: [...step().labels, background ? 0 : 1] });
  }
});

// ---- history: every action is an entry (js/history.js, js/undoable.js) ------------------------

const undoable = createUndoable({
  state, refresh, openImage, dropProposal,
  onChange: (history) => {
    for (const [id, label, key] of [["undo", history.undoLabel, "Ctrl+Z"], ["redo", history.redoLabel, "Ctrl+Shift+Z"]]) {
      $(id).disabled = !label;
      $(id).title = label ? `${id} ${label} (${key})` : `nothing to ${id}`;
    }
  },
});
const { history, prompts, recordPrompts } = undoable;

const editor = createEditor({
  state, history, canvas, draw, refresh, setStatus, toImage, accent: ACCENT,
  applyUpdate: (updated) => { state.annotations = state.annotations.map((a) => (a.id === updated.id ? updated : a)); },
});

function cancel() {
  // Esc: leave the annotation being edited, else clear the prompts (both undoable)
  if (state.selected !== null) return editor.leave();
  if (!step().points.length && !step().box) return;
  const before = prompts();
  clearPrompts();
  recordPrompts("clear prompts", before);
}

// ---- annotations --------------------------------------------------------------------------------

function category() {
  const name = $("category").value.trim();
  if (!name) {
    $("category").focus();
    setStatus("type a category name first", true);
  }
  return name;
}

/** Save a mask of image (the entry of state.images it was made on: by the time a queued save runs,
 * the page may show another image) as an annotation of category name. */
async function saveAnnotation(rle, score, name, image) {
  if (!name) return null;
  const ann = await api("POST", `/api/images/${image.id}/annotations`, { category: name, rle, score });
  if (state.image && state.image.id === image.id) state.annotations.push(ann);
  image.annotations += 1;
  annotated(image);
  setStatus(`saved annotation #${ann.id} (${ann.category})`);
  await refreshCategories();
  refresh(); // its row in the list
  return ann;
}

async function accept() {
  if (editor.active()) return editor.save(); // Enter saves the edited mask
  const chosen = candidate();
  const name = chosen && category();
  if (!name) return;
  const before = prompts(), image = state.images[state.index];
  $("category").blur(); // shortcuts (Ctrl+Z: undo this accept) work at once
  clearPrompts(); // at once: a second Enter does not save it twice; clicks made meanwhile are the next object's
  const cleared = state.steps;
  try {
    await undoable.performSaved("accept", () => saveAnnotation(chosen.rle, chosen.score, name, image),
      () => undoable.showPrompts(before), clearPrompts);
  } catch (error) {
    if (state.steps === cleared) undoable.showPrompts(before); // not saved: its prompts come back, unless new ones were made
    throw error;
  }
}

async function relabel() {
  const name = state.selected !== null && category();
  if (!name) return;
  const updated = await undoable.relabel(state.selected, name, async (answer) => {
    state.annotations = state.annotations.map((a) => (a.id === answer.id ? answer : a));
    await refreshCategories();
    refresh();
    return answer;
  });
  setStatus(`annotation #${updated.id} is now ${updated.category}`);
}

async function deleteSelected() {
  const ann = state.annotations.find((a) => a.id === state.selected);
  if (!ann) return;
  editor.leave(); // unsaved changes to its mask: dropped, as an undoable step of their own
  await undoable.remove(ann);
  setStatus(`deleted #${ann.id} — Ctrl+Z to undo`);
}

async function togglePreview() {
  if (state.preview) {
    state.preview = null;
    refresh();
    return;
  }
  if (state.selected === null) return;
  const id = state.selected;
  showSpinner(`removing #${id}…`);
  try {
    state.preview = { id, bitmap: await createImageBitmap(await apiBlob("POST", `/api/annotations/${id}/remove`)) };
  } finally {
    showSpinner("");
  }
  setStatus(`annotation #${id} removed (a preview: the image and its annotations are unchanged)`);
  refresh();
}

// ---- everything: automatic proposals to review --------------------------------------------------

async function runEverything() {
  if (!state.image) return;
  const imageId = state.image.id;
  showSpinner("generating mask proposals…");
  try {
    const result = await api("POST", `/api/images/${imageId}/everything`, everythingBody());
    if (!state.image || state.image.id !== imageId) return;
    state.proposals = withColours(result.proposals);
    state.focused = 0;
    setStatus(`${result.proposals.length} proposals in ${(result.total_ms / 1000).toFixed(1)} s: keep (K) or drop (X) each`);
    refresh();
  } finally {
    showSpinner("");
  }
}

async function runFind() {
  const text = $("find-text").value.trim();
  if (!state.image || !text) return;
  const imageId = state.image.id;
  showSpinner(`finding ${text}…`);
  try {
    const result = await api("POST", `/api/images/${imageId}/find`, { text });
    if (!state.image || state.image.id !== imageId) return;
    state.proposals = withColours(result.proposals);
    state.focused = 0;
    setStatus(`${result.proposals.length} found for ${result.classes.join(", ")} in `
      + `${(result.total_ms / 1000).toFixed(1)} s: keep (K) or drop (X) each`);
    refresh();
  } finally {
    showSpinner("");
  }
}

async function keepProposal(as = null) {
  const proposal = state.proposals[state.focused];
  if (!proposal) return;
  // a category hotkey names the category; else a found proposal keeps its own, and an "everything"
  // one takes the category chosen explicitly (never whatever is typed in the accept field)
  const name = as ? as.name : proposal.category || (chosenCategory() || {}).name;
  if (!name) {
    askForCategory("keep this proposal");
    return;
  }
  const image = state.images[state.index];
  await undoable.performKept(proposal, state.focused,
    () => saveAnnotation(proposal.rle, proposal.predicted_iou, name, image));
}

async function keepAs(hotkey) {
  const chosen = byHotkey(hotkey);
  if (!chosen) {
    setStatus(`no category has the hotkey ${hotkey}: add one under Categories`, true);
    return;
  }
  choose(chosen.id);
  await keepProposal(chosen);
}

async function reloadAnnotations() {
  if (!state.image) return;
  state.annotations = await api("GET", `/api/images/${state.image.id}/annotations`);
  refresh();
}

async function markState(wanted) {
  await toggleState(state.images, state.index, wanted);
  refresh();
}

async function openUnfinished(step) {
  const index = unfinished(state.images, state.index, step);
  if (index >= 0) await openImage(index);
}

function dropProposal() {
  state.proposals.splice(state.focused, 1);
  state.focused = Math.min(state.focused, Math.max(0, state.proposals.length - 1));
  refresh();
}

async function keepAll() {
  if (state.proposals.some((p) => !p.category) && !chosenCategory()) {
    askForCategory("keep every proposal");
    return;
  }
  state.focused = 0;
  const count = state.proposals.length;
  await history.grouped(`keep ${count} proposals`, state.image.id, async () => {
    while (state.proposals.length) await keepProposal();
  });
}

// ---- wiring -------------------------------------------------------------------------------------

const guarded = (fn) => () => Promise.resolve(fn()).catch(fail);

$("accept-form").addEventListener("submit", (event) => { event.preventDefault(); guarded(accept)(); });
$("relabel").addEventListener("click", guarded(relabel));
$("delete").addEventListener("click", guarded(deleteSelected));
$("remove-preview").addEventListener("click", guarded(togglePreview));
$("everything-form").addEventListener("submit", (event) => { event.preventDefault(); guarded(runEverything)(); });
$("find-form").addEventListener("submit", (event) => { event.preventDefault(); guarded(runFind)(); });
$("keep").addEventListener("click", guarded(keepProposal));
$("drop").addEventListener("click", undoable.dropFocused);
$("keep-all").addEventListener("click", guarded(keepAll));
$("drop-all").addEventListener("click", undoable.dropAll);
$("undo").addEventListener("click", guarded(undo));
$("redo").addEventListener("click", guarded(redo));
$("brush").addEventListener("click", () => editor.setTool("brush"));
$("eraser").addEventListener("click", () => editor.setTool("eraser"));
$("save-edit").addEventListener("click", guarded(editor.save));
$("mark-done").addEventListener("click", guarded(() => markState("done")));
$("mark-empty").addEventListener("click", guarded(() => markState("empty")));
$("next-unfinished").addEventListener("click", guarded(() => openUnfinished(1)));
$("prev-unfinished").addEventListener("click", guarded(() => openUnfinished(-1)));
initCategories(reloadAnnotations);
new ResizeObserver(() => { fitCanvas(); draw(); }).observe(canvas); // window or panel size changes
$("fit").addEventListener("click", zoomed(() => view.fit()));
$("zoom-in").addEventListener("click", zoomed(() => view.zoomCentre(ZOOM_STEP)));
$("zoom-out").addEventListener("click", zoomed(() => view.zoomCentre(1 / ZOOM_STEP)));
$("hover").addEventListener("click", () => toggleHover());

const keys = {
  "1": () => selectCandidate(0),
  "2": () => selectCandidate(1),
  "3": () => selectCandidate(2),
  c: () => selectCandidate((step().selected + 1) % Math.max(1, candidates().length)),
  Enter: accept,
  z: undo,
  y: redo,
  Z: redo,
  Escape: cancel,
  e: runEverything,
  f: () => { if (!$("find-form").hidden) $("find-text").focus(); },
  k: keepProposal,
  x: undoable.dropFocused,
  r: relabel,
  o: togglePreview,
  Delete: deleteSelected,
  Backspace: deleteSelected,
  b: () => editor.setTool("brush"),
  B: () => editor.setTool("eraser"),
  "[": () => editor.resize(0.8),
  "]": () => editor.resize(1.25),
  n: () => openImage(state.index + 1),
  p: () => openImage(state.index - 1),
  u: () => openUnfinished(1),
  U: () => openUnfinished(-1),
  d: () => markState("done"),
  m: () => markState("empty"),
  "0": zoomed(() => view.fit()),
  "+": zoomed(() => view.zoomCentre(ZOOM_STEP)),
  "=": zoomed(() => view.zoomCentre(ZOOM_STEP)),
  "-": zoomed(() => view.zoomCentre(1 / ZOOM_STEP)),
  h: () => toggleHover(),
};

function categoryKey(event) {
  // Shift+1-9 chooses a category; 1-9 while reviewing proposals (no candidate masks) keeps the
  // focused one as that category; otherwise 1-3 stay the candidate keys
  const digit = /^(?:Digit|Numpad)([1-9])$/.exec(event.code);
  if (!digit || event.ctrlKey || event.metaKey || event.altKey) return false;
  const hotkey = Number(digit[1]);
  if (event.shiftKey) {
    const chosen = byHotkey(hotkey);
    if (chosen) choose(chosen.id);
    return true;
  }
  if (!state.proposals.length || candidates().length) return false;
  guarded(() => keepAs(hotkey))();
  return true;
}

window.addEventListener("keydown", (event) => {
  if (event.key === " " && !(event.target instanceof HTMLInputElement)) {
    event.preventDefault(); // no page scroll, no button press: Space + drag pans
    spaceHeld = true;
    canvas.style.cursor = "grab";
  }
});
window.addEventListener("keyup", (event) => {
  if (event.key !== " " || event.target instanceof HTMLInputElement) return;
  event.preventDefault();
  spaceHeld = false;
  if (!state.pan) canvas.style.cursor = "";
});

window.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement) {
    if (event.key === "Escape") event.target.blur();
    return; // typing a category; Enter submits the form
  }
  if ((event.key === "Enter" || event.key === " ") && event.target.closest && event.target.closest("button, a, li[tabindex]")) {
    return; // a focused button, link or row takes its own Enter / Space
  }
  if (categoryKey(event)) {
    event.preventDefault();
    return;
  }
  const key = event.key.length === 1 && !event.shiftKey ? event.key.toLowerCase() : event.key;
  const action = keys[key];
  if (!action || event.altKey || ((event.ctrlKey || event.metaKey) && !"zyZ".includes(key))) return;
  event.preventDefault();
  guarded(action)();
});

loadImages().catch(fail);
