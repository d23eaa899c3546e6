// Reviewing automatic proposals: stable colours (fixed when the proposals arrive, so keeping or
// dropping one reshuffles nothing), the focused one outlined and scrolled into view, rows that show
// only the scores the engine filters on, and the "everything" form reduced to the options it honours.
import { colorOf, overlay } from "./masks.js";

const $ = (id) => document.getElementById(id);
const OUTLINE_SCREEN_PX = 3; // the focused proposal's contour, in screen pixels whatever the zoom

/** ``view.centerOn(bbox)`` (XYWH image pixels) is called when the focus moves: the zoom/pan view sets it. */
export const view = { centerOn: null };
let honoured = null; // null: every option (older servers do not say)

/** Proposals as shown: each with its own colour for as long as it is listed. */
export function withColours(proposals) {
  return proposals.map((p, i) => ({ ...p, color: colorOf(i + 7) }));
}

export function setGeneratorOptions(options) {
  honoured = options ? new Set(options) : null;
  document.querySelectorAll("#everything-form [data-option]").forEach((input) => {
    input.closest("label").hidden = !honours(input.dataset.option);
  });
}

const honours = (option) => honoured === null || honoured.has(option);

/** The "everything" request: only the options the engine honours (fast is a speed hint for SAM). */
export function everythingBody() {
  const body = {};
  document.querySelectorAll("#everything-form [data-option]").forEach((input) => {
    if (honours(input.dataset.option)) body[input.dataset.option] = Number(input.value);
  });
  return { ...body, fast: true };
}

export function proposalText(p) {
  const parts = [];
  if (p.category) parts.push(`${p.category} ${p.detector_score.toFixed(2)}`);
  if (honours("pred_iou_thresh")) parts.push(`iou ${p.predicted_iou.toFixed(2)}`);
  if (honours("stability_score_thresh")) parts.push(`stability ${p.stability_score.toFixed(2)}`);
  parts.push(`${p.area} px`);
  return parts.join(" · ");
}

/** A thick contrasting contour round the focused proposal: its edge pixels drawn in a ring of offsets. */
export function drawFocused(ctx, proposal, scale) {
  if (!proposal) return;
  const outer = Math.max(2, Math.round(OUTLINE_SCREEN_PX * scale)); // whole image pixels: crisp, never blurred
  const inner = Math.max(1, Math.round(outer / 2));
  ctx.save();
  ctx.imageSmoothingEnabled = false;
  for (const [color, radius] of [[[20, 20, 20], outer], [[255, 255, 255], inner]]) {
    const edges = overlay(proposal.rle, color, 0);
    for (const [dx, dy] of [[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]]) {
      ctx.drawImage(edges, dx * radius, dy * radius);
    }
  }
  ctx.drawImage(overlay(proposal.rle, proposal.color, 0), 0, 0);
  ctx.restore();
}

let shown = null; // the proposal focused when the list was last drawn

/** After the list is drawn: when the focus moved, its row scrolled into view and the view centred on it. */
export function showFocused(proposal, index) {
  if (proposal === shown) return;
  shown = proposal;
  const row = $("proposals").children[index];
  if (row) row.scrollIntoView({ block: "nearest" });
  if (proposal && view.centerOn) view.centerOn(proposal.bbox);
}
