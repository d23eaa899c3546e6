// The selected accepted mask's polygon outline, as the COCO/YOLO exports write it: computed by the
// server (OpenCV contours, simplified: GET .../annotations?polygons=1), fetched once per mask.
import { api } from "./api.js";

const outlines = new WeakMap(); // annotation object -> polygons, or "pending"

/** Draw ``ann``'s polygons (fetching them first, then ``redraw()``); ``scale``: image px per screen px. */
export function drawPolygons(ctx, imageId, ann, scale, redraw) {
  if (!ann) return;
  const polygons = outlines.get(ann);
  if (polygons === undefined) {
    outlines.set(ann, "pending");
    fetchPolygons(imageId, ann).then(redraw, () => outlines.delete(ann));
    return;
  }
  if (polygons === "pending") return;
  ctx.save();
  ctx.lineJoin = "round";
  for (const [color, width, dash] of [["#111", 3, []], ["#fff", 1.5, [6, 4]]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = width * scale;
    ctx.setLineDash(dash.map((d) => d * scale));
    for (const flat of polygons) {
      ctx.beginPath();
      for (let i = 0; i < flat.length; i += 2) ctx.lineTo(flat[i], flat[i + 1]);
      ctx.closePath();
      ctx.stroke();
    }
  }
  ctx.fillStyle = "#fff";
  for (const flat of polygons) {
    for (let i = 0; i < flat.length; i += 2) ctx.fillRect(flat[i] - 1.5 * scale, flat[i + 1] - 1.5 * scale, 3 * scale, 3 * scale);
  }
  ctx.restore();
  document.body.dataset.polygonPoints = String(polygons.reduce((n, flat) => n + flat.length / 2, 0));
}

async function fetchPolygons(imageId, ann) {
  const listed = await api("GET", `/api/images/${imageId}/annotations?polygons=1`);
  const same = listed.find((a) => a.id === ann.id && a.segmentation.counts === ann.segmentation.counts);
  outlines.set(ann, same ? same.polygons : []);
}
