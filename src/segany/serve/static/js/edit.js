// Editing an accepted annotation: the selected annotation's mask is a working copy, changed by
//  - clicks: a click (or a box) asks the server for SAM's mask of that prompt alone, and its best
//    candidate is added to the working mask (right click / shift: subtracted from it). The union /
//    difference works for every engine and for any annotation (imported, brushed), whose original
//    prompts are not kept;
//  - a brush and an eraser, painted in image pixels (the size, [ and ], is in image pixels too).
// Each change is previewed and is a step of the page's history; Enter saves the working mask with
// PATCH /api/annotations/{id} {rle} (an entry whose undo PATCHes the old mask back); Esc leaves the
// annotation, dropping unsaved changes (one Ctrl+Z brings them back).
import { api } from "./api.js";
import { overlay, rleRuns, rleToMask } from "./masks.js";

const MIN_BRUSH = 1, MAX_BRUSH = 512;

/** A row-major mask of 0s and 1s (a Uint8Array) as COCO compressed RLE (pycocotools' rleToString:
 * column-major runs). */
export function maskToRle(mask, height, width) {
  // read row by row (in memory order, 4 pixels at a time where rows are word-aligned): a column's
  // runs end where a pixel differs from the one above it
  const changes = Array.from({ length: width }, () => []); // per column, the rows where its value changes
  const aligned = mask.byteOffset % 4 === 0 && width % 4 === 0;
  const words = aligned ? new Uint32Array(mask.buffer, mask.byteOffset, (height * width) / 4) : null;
  for (let y = 1, i = width; y < height; y++) {
    for (let x = 0; x < width; x++, i++) {
      if (words && x % 4 === 0 && words[i >> 2] === words[(i - width) >> 2]) {
        x += 3;
        i += 3;
      } else if (mask[i] !== mask[i - width]) {
        changes[x].push(y);
      }
    }
  }
  const runs = [];
  let last = 0, value = 0;
  for (let x = 0; x < width; x++) {
    const base = x * height;
    if (mask[x] !== value) { // the column starts unlike the previous one ended
      runs.push(base - last);
      last = base;
      value = mask[x];
    }
    for (const y of changes[x]) {
      runs.push(base + y - last);
      last = base + y;
      value = 1 - value;
    }
  }
  runs.push(height * width - last);
  let counts = "";
  runs.forEach((value, i) => {
    let x = i > 2 ? value - runs[i - 2] : value;
    for (let more = true; more;) {
      let c = x & 0x1f;
      x >>= 5;
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      counts += String.fromCharCode(c + 48);
    }
  });
  return { size: [height, width], counts };
}

/** Paint a disc of radius r (image pixels) at each of points into mask: value 1 (brush) or 0 (eraser);
 * consecutive points are joined, so a fast stroke leaves no gaps. */
export function paint(mask, height, width, points, r, value) {
  const stamp = ([cx, cy]) => {
    const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(height - 1, Math.ceil(cy + r));
    const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(width - 1, Math.ceil(cx + r));
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r * r) mask[y * width + x] = value;
      }
    }
  };
  const spacing = Math.max(0.5, r / 2);
  points.forEach((point, i) => {
    if (i === 0) return stamp(point);
    const [px, py] = points[i - 1];
    const n = Math.ceil(Math.hypot(point[0] - px, point[1] - py) / spacing);
    for (let k = 1; k <= n; k++) stamp([px + ((point[0] - px) * k) / n, py + ((point[1] - py) * k) / n]);
  });
}

/** The editor of the page's selected annotation; page: {state, history, canvas, draw, refresh, setStatus,
 * toImage, accent, applyUpdate(annotation)}. state.selected is the annotation, state.edit = {id, rle} its working mask. */
export function createEditor(page) {
  const { state, history } = page;
  const tools = { tool: "click", brush: 10, stroke: null, cursor: null };
  let saving = null; // the working mask whose save is out

  const annotation = () => state.annotations.find((a) => a.id === state.selected) || null;
  const active = () => Boolean(state.edit && state.image && state.edit.id === state.selected && annotation());
  const pending = () => active() && state.edit.rle.counts !== annotation().segmentation.counts;
  const imageId = () => state.image.id;

  function show(id, rle) {
    // a history step's undo / redo: the annotation selected, with this working mask
    state.selected = id;
    state.edit = { id, rle };
    page.refresh();
  }

  function change(label, rle) {
    // a new working mask, recorded as a step
    const { id, rle: before } = state.edit;
    if (rle.counts === before.counts) return;
    show(id, rle);
    history.record({ label: `${label} #${id}`, image: imageId(), undo: () => show(id, before), redo: () => show(id, rle) });
    page.setStatus(`editing #${id}: ${label} (Enter saves, Esc drops the changes)`);
  }

  function leave() {
    // Esc, another selection, another image: unsaved changes are dropped as an undoable step
    if (pending()) {
      const { id, rle } = state.edit;
      history.record({ label: `drop changes #${id}`, image: imageId(), undo: () => show(id, rle), redo: () => deselect() });
      page.setStatus(`changes to #${id} dropped — Ctrl+Z to get them back`);
    }
    deselect();
  }

  function deselect() {
    state.selected = null;
    state.edit = null;
    tools.stroke = null;
    page.refresh();
  }

  function select(id) {
    // a row or ctrl+click: select that annotation for editing (again: deselect it)
    const same = id === state.selected;
    leave();
    if (same || id === null) return;
    const ann = state.annotations.find((a) => a.id === id);
    if (!ann) return;
    show(id, ann.segmentation);
    page.setStatus(`editing #${id}: click adds, right click subtracts, B brush, Shift+B eraser, Enter saves, Esc leaves`);
  }

  function annotationAt([x, y]) {
    // the topmost annotation whose mask holds the image pixel under (x, y)
    const { width, height } = state.image;
    const k = Math.min(width - 1, Math.floor(x)) * height + Math.min(height - 1, Math.floor(y)); // column-major
    const holds = (rle) => {
      let start = 0, inside = false;
      for (const run of rleRuns(rle.counts)) {
        if (k < start + run) return inside;
        start += run;
        inside = !inside;
      }
      return false;
    };
    return [...state.annotations].reverse().find((a) => holds(a.segmentation)) || null;
  }

  async function prompt(body, add) {
    const { id } = state.edit;
    const image = imageId();
    page.setStatus(`predicting the part to ${add ? "add to" : "subtract from"} #${id}…`);
    const result = await api("POST", `/api/images/${image}/predict`, body);
    if (!active() || state.edit.id !== id || imageId() !== image || !result.candidates.length) return;
    const part = rleToMask(result.candidates[0].rle);
    const mask = rleToMask(state.edit.rle); // the working mask now: quick clicks compose
    for (let i = 0; i < mask.length; i++) if (part[i]) mask[i] = add ? 1 : 0;
    change(add ? "add" : "subtract", maskToRle(mask, state.image.height, state.image.width));
  }

  // ---- pointer (called by the page's handlers; true when the editor took the event) ----

  function down(drag) {
    if (!active() || tools.tool === "click") return false;
    const erase = tools.tool === "eraser" || drag.button === 2 || drag.shift;
    tools.stroke = { points: [drag.start], value: erase ? 0 : 1 };
    page.draw();
    return true;
  }

  function move(event) {
    if (!active() || tools.tool === "click") {
      tools.cursor = null;
      return false;
    }
    tools.cursor = tools.stroke || event.target === page.canvas ? page.toImage(event) : null;
    if (tools.stroke) tools.stroke.points.push(tools.cursor);
    page.draw();
    return Boolean(tools.stroke);
  }

  function up(drag) {
    if (!active()) return false;
    if (tools.stroke) {
      const { points, value } = tools.stroke;
      tools.stroke = null;
      const mask = rleToMask(state.edit.rle);
      paint(mask, state.image.height, state.image.width, points, tools.brush, value);
      change(value ? "brush" : "eraser", maskToRle(mask, state.image.height, state.image.width));
      return true;
    }
    const add = !(drag.button === 2 || drag.shift);
    const body = drag.moved ? { box: drag.box, multimask: false } : { points: [drag.start], labels: [1], multimask: true };
    prompt(body, add).catch((error) => page.setStatus(error.message || String(error), true));
    return true;
  }

  // ---- tools and saving ----

  function setTool(tool) {
    if (!active()) return;
    tools.tool = tools.tool === tool ? "click" : tool;
    page.setStatus(tools.tool === "click" ? "clicks: click adds, right click subtracts"
      : `${tools.tool} ${tools.brush} px ([ and ] change the size)`);
    page.refresh();
  }

  function resize(factor) {
    if (!active() || tools.tool === "click") return;
    const size = factor > 1 ? Math.max(tools.brush + 1, Math.round(tools.brush * factor))
      : Math.min(tools.brush - 1, Math.round(tools.brush * factor));
    tools.brush = Math.max(MIN_BRUSH, Math.min(MAX_BRUSH, size));
    page.setStatus(`${tools.tool} ${tools.brush} px`);
    page.refresh();
  }

  async function save() {
    if (!pending() || saving === state.edit) return; // Enter again while this mask's save is out: one save
    const { id, rle } = state.edit;
    if (!rleToMask(rle).some((v) => v)) {
      page.setStatus(`#${id} would be empty: delete it instead (Delete)`, true);
      return;
    }
    let before = null; // the server's mask when this save goes out (after any save still out before it)
    const patch = async (mask, working, reopen) => {
      const sent = state.edit;
      page.applyUpdate(await api("PATCH", `/api/annotations/${id}`, { rle: mask }));
      // a stroke or click made while the request was out stays: only an untouched working mask is
      // replaced; an undo or redo opens the annotation again if it was left, the save itself does not
      if ((reopen && !state.edit) || (state.edit === sent && sent?.id === id)) show(id, working);
    };
    saving = state.edit;
    try {
      await history.perform({ label: `edit #${id}`, image: imageId(), undo: () => patch(before, rle, true),
        redo: () => patch(rle, rle, true) }, () => {
        before = state.annotations.find((a) => a.id === id).segmentation;
        return patch(rle, rle, false);
      });
    } finally {
      saving = null;
    }
    page.setStatus(`saved the new mask of #${id} — Ctrl+Z to undo`);
  }

  function render() {
    // the panel's edit tools: shown while an annotation is selected
    const $ = (id) => document.getElementById(id);
    $("edit-tools").hidden = !active();
    if (!active()) return;
    for (const tool of ["brush", "eraser"]) $(tool).classList.toggle("on", tools.tool === tool);
    $("save-edit").disabled = !pending();
    $("brush-size").textContent = `${tools.brush} px`;
  }

  function drawOver(context, scale) {
    // the working mask instead of the saved one, the stroke being painted, the brush outline
    if (!active()) return;
    context.drawImage(overlay(state.edit.rle, page.accent, 0.5), 0, 0);
    const circle = ([x, y], fill) => {
      context.beginPath();
      context.arc(x, y, tools.brush, 0, 2 * Math.PI);
      if (fill) context.fill(); else context.stroke();
    };
    if (tools.stroke) {
      context.fillStyle = tools.stroke.value ? "rgba(255, 40, 200, 0.5)" : "rgba(255, 255, 255, 0.6)";
      tools.stroke.points.forEach((p) => circle(p, true));
    }
    if (tools.cursor && tools.tool !== "click") {
      context.lineWidth = 1.5 * scale;
      context.strokeStyle = tools.tool === "eraser" ? "#fff" : "#ff28c8";
      circle(tools.cursor, false);
    }
  }

  return { active, pending, select, leave, annotationAt, down, move, up, setTool, resize, save, render, drawOver, tools };
}
