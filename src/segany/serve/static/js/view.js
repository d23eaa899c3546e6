// The view transform of the annotator's canvas: zoom and pan over the image.
// The canvas fills the stage (its backing store in device pixels); the image and the overlays,
// built once at image resolution, are drawn through screen = image * scale + offset (CSS pixels).
// Prompts stay in image coordinates whatever the zoom.

const MARGIN = 12; // CSS pixels around the fitted image
const MAX_SCALE = 64; // screen pixels per image pixel
export const ZOOM_STEP = 1.25;

export class View {
  constructor(canvas) {
    this.canvas = canvas;
    this.scale = 1; // CSS pixels per image pixel
    this.x = 0; // where image (0, 0) lies, in CSS pixels from the canvas' top left
    this.y = 0;
    this.width = 0; // the image's size
    this.height = 0;
    this.fitted = true; // a resize keeps the image fitted until the user zooms or pans
    this.dpr = 1;
  }

  /** A new image: shown whole. */
  setImage(width, height) {
    this.width = width;
    this.height = height;
    this.resize();
    this.fit();
  }

  /** Size the canvas' backing store to its box in device pixels (after a layout change). */
  resize() {
    const rect = this.canvas.getBoundingClientRect();
    this.dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.max(1, Math.round(rect.width * this.dpr));
    this.canvas.height = Math.max(1, Math.round(rect.height * this.dpr));
    if (this.fitted) this.fit();
  }

  fitScale() {
    const rect = this.canvas.getBoundingClientRect();
    if (!this.width || !this.height) return 1;
    return Math.max(1e-3, Math.min((rect.width - 2 * MARGIN) / this.width, (rect.height - 2 * MARGIN) / this.height));
  }

  /** The whole image, as large as the canvas allows, centred. */
  fit() {
    const rect = this.canvas.getBoundingClientRect();
    this.scale = this.fitScale();
    this.x = (rect.width - this.width * this.scale) / 2;
    this.y = (rect.height - this.height * this.scale) / 2;
    this.fitted = true;
  }

  /** Zoom by ``factor`` keeping the image point under (clientX, clientY) in place. */
  zoomAt(factor, clientX, clientY) {
    const [ix, iy] = this.toImage(clientX, clientY);
    const low = Math.min(1, this.fitScale() / 4);
    this.scale = Math.min(MAX_SCALE, Math.max(low, this.scale * factor));
    const rect = this.canvas.getBoundingClientRect();
    this.x = clientX - rect.left - ix * this.scale;
    this.y = clientY - rect.top - iy * this.scale;
    this.fitted = false;
  }

  /** Zoom about the canvas' centre (the +/- keys). */
  zoomCentre(factor) {
    const rect = this.canvas.getBoundingClientRect();
    this.zoomAt(factor, rect.left + rect.width / 2, rect.top + rect.height / 2);
  }

  /** Bring a box (XYWH image pixels) to the canvas' centre, zooming out if it does not fit;
   * nothing to do while the whole image is shown. */
  centerOn([x, y, w, h]) {
    if (this.fitted) return;
    const rect = this.canvas.getBoundingClientRect();
    const room = Math.min((rect.width - 2 * MARGIN) / Math.max(w, 1), (rect.height - 2 * MARGIN) / Math.max(h, 1));
    this.scale = Math.max(Math.min(this.scale, room), Math.min(1, this.fitScale() / 4));
    this.x = rect.width / 2 - (x + w / 2) * this.scale;
    this.y = rect.height / 2 - (y + h / 2) * this.scale;
  }

  panBy(dx, dy) {
    this.x += dx;
    this.y += dy;
    this.fitted = false;
  }

  /** Image coordinates (not clamped) of a point in client (viewport CSS) pixels. */
  toImage(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    return [(clientX - rect.left - this.x) / this.scale, (clientY - rect.top - this.y) / this.scale];
  }

  /** Client (viewport CSS) pixels of an image point: where to put the mouse to press on it. */
  toScreen(x, y) {
    const rect = this.canvas.getBoundingClientRect();
    return [rect.left + this.x + x * this.scale, rect.top + this.y + y * this.scale];
  }

  contains([x, y]) {
    return x >= 0 && y >= 0 && x <= this.width && y <= this.height;
  }

  /** Clear the canvas, then set ``ctx`` to draw in image coordinates (nearest pixels from 2x on). */
  begin(ctx) {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const s = this.scale * this.dpr;
    ctx.setTransform(s, 0, 0, s, this.x * this.dpr, this.y * this.dpr);
    ctx.imageSmoothingEnabled = this.scale < 2; // see the pixels being annotated
  }
}
