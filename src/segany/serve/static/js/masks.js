// Masks in the page: COCO RLE decoded, coloured overlay canvases (cached), stable colours.

export function rleRuns(counts) {
  // Inverse of pycocotools' rleToString: 6-bit characters from '0', 5 data bits, sign bit 0x10,
  // continuation bit 0x20; runs after the second are stored as differences to the run two back.
  if (Array.isArray(counts)) return counts;
  const runs = [];
  let p = 0;
  while (p < counts.length) {
    let value = 0, shift = 0, more = true;
    while (more) {
      const code = counts.charCodeAt(p++) - 48;
      value |= (code & 0x1f) << shift;
      more = (code & 0x20) !== 0;
      shift += 5;
      if (!more && (code & 0x10)) value |= -1 << shift;
    }
    if (runs.length > 2) value += runs[runs.length - 2];
    runs.push(value);
  }
  return runs;
}

export function rleToMask(rle) {
  const [h, w] = rle.size;
  const mask = new Uint8Array(h * w); // row-major; RLE runs are column-major
  let k = 0, on = false;
  for (const run of rleRuns(rle.counts)) {
    if (on) for (let i = k; i < k + run; i++) mask[(i % h) * w + Math.floor(i / h)] = 1;
    k += run;
    on = !on;
  }
  return mask;
}

export const overlayCache = new Map();

export function overlay(rle, color, alpha) {
  const key = `${color}|${alpha}|${rle.counts}`;
  let cached = overlayCache.get(key);
  if (cached) return cached;
  const [h, w] = rle.size;
  const layer = maskLayer(rleToMask(rle), w, h, color, alpha);
  if (overlayCache.size > 300) overlayCache.clear();
  overlayCache.set(key, layer);
  return layer;
}

/** A (h, w) 0/1 row-major mask as a canvas at its resolution: ``color`` at ``alpha``, edges opaque. */
export function maskLayer(mask, w, h, color, alpha) {
  const layer = document.createElement("canvas");
  layer.width = w;
  layer.height = h;
  const layerCtx = layer.getContext("2d");
  const pixels = layerCtx.createImageData(w, h);
  const data = pixels.data;
  const fill = Math.round(alpha * 255);
  for (let y = 0, i = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i++) {
      if (!mask[i]) continue;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
        !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
      data[4 * i] = color[0];
      data[4 * i + 1] = color[1];
      data[4 * i + 2] = color[2];
      data[4 * i + 3] = edge ? 255 : fill;
    }
  }
  layerCtx.putImageData(pixels, 0, 0);
  return layer;
}

export function colorOf(index) {
  // well-separated hues (golden angle), as segany's own overlays
  const hue = (index * 137.508) % 360, s = 0.78, l = 0.52;
  const f = (n) => {
    const k = (n + hue / 30) % 12;
    return Math.round(255 * (l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

export const css = (c) => `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
