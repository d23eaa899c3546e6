// Progress over the folder: each image's state (not started / in progress / done / empty), kept in
// the COCO file by the server, shown in the images list with counts; "unfinished" navigation.
import { api } from "./api.js";
import { focusable, setStatus } from "./status.js";

const $ = (id) => document.getElementById(id);
export const STATE_NAMES = { not_started: "not started", in_progress: "in progress", done: "done", empty: "empty" };
const UNFINISHED = ["not_started", "in_progress"];

/** The images list: one focusable row per image (state mark, name, annotation count). */
export function buildImageList(images, open) {
  const list = $("images");
  list.replaceChildren();
  images.forEach((image, i) => {
    const li = document.createElement("li");
    li.title = image.file_name;
    const mark = document.createElement("span");
    mark.className = "state";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = image.file_name;
    const count = document.createElement("span");
    count.className = "count";
    li.append(mark, name, count);
    focusable(li, () => open(i));
    list.append(li);
  });
}

/** Refresh the rows' current / state / count and the "n/N done" line. */
export function renderProgress(images, index) {
  document.querySelectorAll("#images li").forEach((li, i) => {
    const image = images[i];
    li.classList.toggle("current", i === index);
    li.dataset.state = image.state;
    li.querySelector(".state").title = STATE_NAMES[image.state];
    li.querySelector(".count").textContent = image.annotations || "";
    li.setAttribute("aria-label", `${image.file_name}: ${STATE_NAMES[image.state]}, ${image.annotations} annotations`);
  });
  const finished = images.filter((i) => !UNFINISHED.includes(i.state)).length;
  const empty = images.filter((i) => i.state === "empty").length;
  $("progress").textContent = images.length ? `${finished}/${images.length} done` + (empty ? ` (${empty} empty)` : "") : "";
  const current = images[index];
  $("mark-done").classList.toggle("on", Boolean(current && current.state === "done"));
  $("mark-empty").classList.toggle("on", Boolean(current && current.state === "empty"));
}

/** Set the current image's state on the server (pressing the state it has goes back a step). */
export async function toggleState(images, index, wanted) {
  const image = images[index];
  if (!image) return;
  const state = image.state !== wanted ? wanted : wanted === "done" && image.annotations ? "in_progress" : "not_started";
  if (state === "empty" && image.annotations) {
    setStatus(`${image.file_name} has annotations: delete them before marking it empty`, true);
    return;
  }
  Object.assign(image, await api("PUT", `/api/images/${image.id}/state`, { state }));
  setStatus(`${image.file_name}: ${STATE_NAMES[image.state]}`);
}

/** An image got an annotation: as the server does, not started and empty become in progress. */
export function annotated(image) {
  if (image && (image.state === "not_started" || image.state === "empty")) image.state = "in_progress";
}

/** The index of the next (step 1) or previous (-1) unfinished image after ``index``, wrapping; -1 if none. */
export function unfinished(images, index, step) {
  for (let k = 1; k <= images.length; k++) {
    const i = (((index + step * k) % images.length) + images.length) % images.length;
    if (UNFINISHED.includes(images[i].state) && i !== index) return i;
  }
  setStatus("every other image is done or empty");
  return -1;
}
