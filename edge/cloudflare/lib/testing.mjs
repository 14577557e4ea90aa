// A small site in the layout `otapub build` writes (design.md §4), made without Python, and an
// in-memory bucket with the R2 binding's list/put/delete that records what was done to it.

import { createHash } from "node:crypto";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { djb2 } from "../src/protocol.mjs";

export const SECRET = "node-test-secret";
export const MAC12 = "AABBCCDDEEFF";
export const TOKEN = djb2(MAC12, SECRET, 5381).toString(16).toUpperCase().padStart(8, "0");

export async function write(root, rel, data) {
  await mkdir(path.dirname(path.join(root, rel)), { recursive: true });
  await writeFile(path.join(root, rel), data);
}

/** A site with one device offered `firmware` as version 1.3.8; returns {root, firmwareKey, ...}. */
export async function makeSite(firmware = Buffer.alloc(3000, 7), root = null) {
  const dir = root || await mkdtemp(path.join(os.tmpdir(), "otapub-edge-site-"));
  const sha = createHash("sha256").update(firmware).digest("hex");
  const md5 = createHash("md5").update(firmware).digest("hex");
  const firmwareKey = `f/${sha}/panic_1.3.8.bin`;
  await write(dir, firmwareKey, firmware);
  const answer = { checksum: md5, device_id: "PanicAlarm_EEFF", firmware_url: `/${firmwareKey}`,
    firmware_version: "1.3.8", hardware: null, mac: "AA:BB:CC:DD:EE:FF", md5, release: "panic", sha256: sha,
    size: firmware.length };
  await write(dir, `d/${TOKEN}/${MAC12}.json`, JSON.stringify(answer));
  await write(dir, "build.json", JSON.stringify({ devices: 1, generator: "node test" }, null, 2) + "\n");
  return { root: dir, firmwareKey, sha, md5, answerKey: `d/${TOKEN}/${MAC12}.json` };
}

export class MemoryBucket {
  constructor() {
    this.objects = new Map();
    this.ops = [];
  }

  async list({ cursor, limit = 1000 } = {}) {
    const keys = [...this.objects.keys()].sort();
    const start = cursor ? Number(cursor) : 0;
    const page = keys.slice(start, start + limit);
    const truncated = start + limit < keys.length;
    return {
      objects: page.map((key) => ({ key, size: this.objects.get(key).data.length,
        etag: createHash("md5").update(this.objects.get(key).data).digest("hex") })),
      truncated, cursor: truncated ? String(start + limit) : undefined,
    };
  }

  async put(key, data, options) {
    this.ops.push(["put", key]);
    this.objects.set(key, { data: Buffer.from(data), options });
  }

  async delete(keys) {
    for (const key of keys) {
      this.ops.push(["delete", key]);
      this.objects.delete(key);
    }
  }
}
