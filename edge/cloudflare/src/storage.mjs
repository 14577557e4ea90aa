// Where the Worker reads the site from: the static-assets binding (ASSETS) or an R2 bucket (SITE).
// Both answer the same three questions; keys are site paths built from validated parts only.

import { INDEX_KEY } from "./layout.mjs";

const ORIGIN = "https://assets.invalid/"; // the host is ignored by the assets binding

/** Pass `length` bytes of `body` starting at `offset` into a stream of exactly that length. */
function window(body, offset, length, whole) {
  // eslint-disable-next-line no-undef -- a Workers runtime global
  const { readable, writable } = new FixedLengthStream(length);
  if (whole) {
    body.pipeTo(writable).catch(() => {});
    return readable;
  }
  let skip = offset;
  let left = length;
  const slicer = new TransformStream({
    transform(chunk, controller) {
      let part = chunk;
      if (skip > 0) {
        const dropped = Math.min(skip, part.byteLength);
        part = part.subarray(dropped);
        skip -= dropped;
      }
      if (left > 0 && part.byteLength > 0) {
        part = part.subarray(0, Math.min(left, part.byteLength));
        left -= part.byteLength;
        controller.enqueue(part);
      }
      if (left === 0) controller.terminate();
    },
  });
  body.pipeThrough(slicer).pipeTo(writable).catch(() => {});
  return readable;
}

export class AssetStore {
  constructor(assets) {
    this.assets = assets;
  }

  async #fetch(key, method = "GET") {
    // A bare request: the shim computes its own conditional and range answers.
    const response = await this.assets.fetch(new Request(ORIGIN + key, { method }));
    if (response.status !== 200) {
      await response.body?.cancel();
      return null;
    }
    return response;
  }

  async bytes(key) {
    const response = await this.#fetch(key);
    return response ? new Uint8Array(await response.arrayBuffer()) : null;
  }

  async index() {
    // Assets and Worker deploy together as one version: the index cannot change under an isolate.
    if (!AssetStore.cached) {
      const data = await this.bytes(INDEX_KEY);
      AssetStore.cached = data ? JSON.parse(new TextDecoder().decode(data)) : { firmware: {} };
    }
    return AssetStore.cached;
  }

  async stat(key) {
    const entry = (await this.index()).firmware?.[key];
    return entry ? { size: entry.size, mtimeNs: BigInt(entry.mtime_ns) } : null;
  }

  async body(key, offset, length, size) {
    const response = await this.#fetch(key);
    return response ? window(response.body, offset, length, offset === 0 && length === size) : null;
  }
}
AssetStore.cached = null;

export class R2Store {
  constructor(bucket) {
    this.bucket = bucket;
  }

  async bytes(key) {
    const object = await this.bucket.get(key);
    return object ? new Uint8Array(await object.arrayBuffer()) : null;
  }

  async index() {
    const data = await this.bytes(INDEX_KEY);
    return data ? JSON.parse(new TextDecoder().decode(data)) : { firmware: {} };
  }

  async stat(key) {
    const object = await this.bucket.head(key);
    if (!object) return null;
    const recorded = object.customMetadata?.["mtime-ns"];
    const mtimeNs = recorded && /^\d+$/.test(recorded) ? BigInt(recorded)
      : BigInt(object.uploaded.getTime()) * 1000000n;
    return { size: object.size, mtimeNs };
  }

  async body(key, offset, length, size) {
    const whole = offset === 0 && length === size;
    const object = await this.bucket.get(key, whole ? {} : { range: { offset, length } });
    if (!object || !object.body) return null;
    return window(object.body, 0, length, true);
  }
}

/** The store the wrangler configuration chose (OTAPUB_STORAGE, else whichever binding exists). */
export function openStore(env) {
  const mode = env.OTAPUB_STORAGE || (env.SITE ? "r2" : "assets");
  if (mode === "r2") {
    if (!env.SITE) throw new Error("OTAPUB_STORAGE is r2 but the R2 binding SITE is missing");
    return new R2Store(env.SITE);
  }
  if (mode === "assets") {
    if (!env.ASSETS) throw new Error("OTAPUB_STORAGE is assets but the assets binding ASSETS is missing");
    return new AssetStore(env.ASSETS);
  }
  throw new Error(`unknown OTAPUB_STORAGE ${JSON.stringify(mode)} (assets or r2)`);
}
