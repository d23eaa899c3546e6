// Hover preview: the mask under the cursor from one foreground point (debounced), drawn lightly,
// never added to the prompts. Where the server offers the model's ONNX decoder and onnxruntime-web
// (GET /api/browser-decoder), the decoder runs in the page on the image embedding fetched once per
// image: no network round trip per preview (while it is faster than asking the server: the
// page keeps the faster source, see source()). Otherwise each preview is one single-point
// POST /api/images/{id}/predict?hover=1 (its best candidate). window.seganyHover.last tells the tests
// (and the latency benchmark) what was drawn: {point, source: "browser" | "server", mask, and the
// performance.now() times: moved (the pointer), started (after the debounce), decoded, drawn}.
import { api, apiBlob } from "./api.js";
import { maskLayer, rleToMask } from "./masks.js";

const DEBOUNCE_MS = 80;
const SLOW_MS = 300; // a browser decode slower than this: try the server once and keep the faster
const COLOR = [0, 190, 255];
const ALPHA = 0.28;

async function loadDecoder() {
  // onnxruntime-web and the ONNX decoder, or null (then previews come from the server)
  const info = await api("GET", "/api/browser-decoder");
  if (!info.decoder || !info.runtime) return null;
  const ort = await import(info.runtime);
  ort.env.wasm.wasmPaths = info.runtime.slice(0, info.runtime.lastIndexOf("/") + 1);
  // threads need a cross-origin-isolated page (segany serve sends the headers)
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const model = new Uint8Array(await (await apiBlob("GET", info.decoder)).arrayBuffer());
  const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
  return { ort, session };
}

async function loadEmbedding(imageId, ort) {
  // the image embedding as the decoder's input tensor, and the image's size in the model's frame
  const response = await fetch(`/api/images/${imageId}/embedding.f32`);
  if (!response.ok) return null;
  const shape = response.headers.get("X-Embedding-Shape").split(",").map(Number);
  const inputSize = response.headers.get("X-Input-Size").split(",").map(Number);
  const tensor = new ort.Tensor("float32", new Float32Array(await response.arrayBuffer()), shape);
  return { tensor, shape, inputSize };
}

export class HoverPreview {
  constructor(onChange) {
    this.onChange = onChange; // redraw
    this.enabled = true;
    this.layer = null; // the preview's overlay canvas, at image resolution
    this.last = null;
    this.image = null;
    this.timer = null;
    this.token = 0; // ignores answers for superseded positions
    this.decoder = null; // promise of loadDecoder()'s answer, made on first use
    this.embedding = null; // promise of loadEmbedding()'s answer for this.image
    this.cost = { browser: null, server: null }; // ms of each source's last decode (WebAssembly on a
    // small CPU can be several times slower than a local server: the faster one is used)
  }

  /** Where the next preview is decoded: the browser first where it can, then the faster source. */
  source(embedding) {
    if (!embedding) return "server";
    const { browser, server } = this.cost;
    if (browser === null) return "browser";
    if (server === null) return browser > SLOW_MS ? "server" : "browser";
    return server < browser ? "server" : "browser";
  }

  /** A new image is shown: drop the preview and the old embedding; load the decoder (once, meanwhile). */
  setImage(image) {
    this.clear();
    this.image = image;
    this.embedding = null;
    if (!this.decoder) {
      this.decoder = loadDecoder().catch((error) => {
        console.warn(`hover preview: browser decoder unavailable, using the server (${error.message || error})`);
        return null;
      });
    }
  }

  /** The server has the image's embedding: fetch it for the browser decoder (once per image). */
  ready(image) {
    if (this.image !== image) return;
    this.embedding = this.decoder.then((decoder) => decoder && loadEmbedding(image.id, decoder.ort)).catch(() => null);
  }

  /** The pointer rests at image point ``point``: preview its mask after the debounce. */
  move(point) {
    if (!this.enabled || !this.image) return;
    const moved = performance.now();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(point, moved, ++this.token), DEBOUNCE_MS);
  }

  clear() {
    clearTimeout(this.timer);
    this.token += 1;
    if (this.layer) {
      this.layer = null;
      this.onChange();
    }
  }

  toggle() {
    this.enabled = !this.enabled;
    if (!this.enabled) this.clear();
    return this.enabled;
  }

  async run(point, moved, token) {
    const started = performance.now();
    const image = this.image;
    const decoder = this.decoder && (await this.decoder);
    const embedding = decoder && this.embedding && (await this.embedding);
    const source = this.source(embedding);
    let mask;
    try {
      mask = source === "browser"
        ? await this.decodeInBrowser(decoder, embedding, image, point)
        : await this.decodeOnServer(image, point);
    } catch (error) {
      console.warn(`hover preview failed: ${error.message || error}`);
      return;
    }
    const decoded = performance.now();
    this.cost[source] = decoded - started;
    if (token !== this.token || image !== this.image || !mask) return;
    this.layer = maskLayer(mask, image.width, image.height, COLOR, ALPHA);
    this.onChange();
    this.last = { point, source, mask, moved, started, decoded, drawn: performance.now() };
    document.body.dataset.hover = source;
  }

  async decodeInBrowser({ ort, session }, { tensor, shape, inputSize }, image, [x, y]) {
    // the official ONNX decoder's inputs: a padding point (label -1) stands for "no box"
    const [height, width] = [image.height, image.width];
    const f32 = (values, dims) => new ort.Tensor("float32", Float32Array.from(values), dims);
    const feeds = {
      image_embeddings: tensor,
      point_coords: f32([(x * inputSize[1]) / width, (y * inputSize[0]) / height, 0, 0], [1, 2, 2]),
      point_labels: f32([1, -1], [1, 2]),
      mask_input: new ort.Tensor("float32", new Float32Array(16 * shape[2] * shape[3]), [1, 1, 4 * shape[2], 4 * shape[3]]),
      has_mask_input: f32([0], [1]),
      orig_im_size: f32([height, width], [2]),
    };
    // exported with return_single_mask: for one point the best of the three multimask tokens
    const logits = (await session.run(feeds)).masks.data;
    const size = height * width;
    const mask = new Uint8Array(size);
    for (let i = 0; i < size; i++) mask[i] = logits[i] > 0 ? 1 : 0;
    return mask;
  }

  async decodeOnServer(image, point) {
    const result = await api("POST", `/api/images/${image.id}/predict?hover=1`,
      { points: [point], labels: [1], multimask: true });
    const best = result.candidates[0];
    return best ? rleToMask(best.rle) : null;
  }
}
