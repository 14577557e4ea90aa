// Mirror a built site into an R2 bucket: upload only what changed, delete what the build pruned,
// in the order that keeps every answer's firmware present (the build's own order, design.md §4):
//
//   1. new firmware (content-addressed: an existing key never needs rewriting)
//   2. keys.json (signed answers: it lists the new key and the previous one), changed answers
//   3. answers of removed devices are deleted
//   4. the Worker's index, then build.json
//   5. firmware no longer in the site is deleted (the build keeps it for a grace period first)
//
// `bucket` is anything with the R2 binding's list/put/delete: a binding proxy from Miniflare
// (tests, local development) or the S3-compatible API (lib/s3.mjs, production).

import { readFile } from "node:fs/promises";

import { INDEX_KEY, KEYS_KEY, RECORD_KEY } from "../src/layout.mjs";
import { md5Bytes, md5File, scanSite } from "./site.mjs";

const META = [INDEX_KEY, RECORD_KEY]; // uploaded in this order, after answers and firmware
const MANAGED = (key) => key.startsWith("d/") || key.startsWith("f/") || key === KEYS_KEY || META.includes(key);

export async function listAll(bucket) {
  const found = new Map();
  let cursor;
  do {
    const page = await bucket.list({ cursor, limit: 1000 });
    for (const object of page.objects) found.set(object.key, { size: object.size, etag: object.etag });
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return found;
}

function contentType(key) {
  return key.startsWith("f/") ? "application/octet-stream" : "application/json";
}

const bare = (etag) => String(etag || "").replace(/^W\//, "").replaceAll('"', "").toLowerCase();

/** What publishing a scanned site into a bucket holding `remote` would do, phase by phase. */
export async function plan(site, remote) {
  const phases = { firmware: [], answers: [], deleteAnswers: [], meta: [], deleteFirmware: [] };
  let unchanged = 0;
  const local = new Set();
  const files = [...site.files, { key: INDEX_KEY, data: site.index, size: site.index.length, mtimeNs: null }];
  for (const file of files) {
    local.add(file.key);
    const there = remote.get(file.key);
    let changed = !there || there.size !== file.size;
    if (!changed && !file.key.startsWith("f/")) {
      const md5 = file.data ? md5Bytes(file.data) : await md5File(file.file);
      changed = bare(there.etag) !== md5;
    }
    if (!changed) {
      unchanged += 1;
      continue;
    }
    if (file.key.startsWith("f/")) phases.firmware.push(file);
    else if (file.key === KEYS_KEY) phases.answers.unshift(file);
    else if (file.key.startsWith("d/")) phases.answers.push(file);
    else phases.meta.push(file);
  }
  // the index before build.json: build.json changing marks a finished publish
  phases.meta.sort((a, b) => META.indexOf(a.key) - META.indexOf(b.key));
  for (const key of [...remote.keys()].sort()) {
    if (local.has(key) || !MANAGED(key)) continue;
    if (key.startsWith("f/")) phases.deleteFirmware.push(key);
    else phases.deleteAnswers.push(key); // answers, and keys.json once signing is off
  }
  return { phases, unchanged };
}

async function pool(items, limit, task) {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      await task(item);
    }
  });
  await Promise.all(workers);
}

/** Publish siteDir into bucket; returns {uploaded, deleted, unchanged, skipped, seconds}. */
export async function publish(siteDir, bucket, { dryRun = false, concurrency = 8, log = () => {} } = {}) {
  const started = Date.now();
  const site = await scanSite(siteDir); // a wrong directory fails before the bucket is touched
  const remote = await listAll(bucket);
  const { phases, unchanged } = await plan(site, remote);
  for (const item of site.skipped) log(`skipped ${item.key}: ${item.why}`);
  const put = async (file) => {
    log(`${dryRun ? "would upload" : "upload"} ${file.key}`);
    if (dryRun) return;
    const data = file.data ?? await readFile(file.file);
    const options = { httpMetadata: { contentType: contentType(file.key) } };
    if (file.mtimeNs !== null) options.customMetadata = { "mtime-ns": file.mtimeNs.toString() };
    await bucket.put(file.key, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), options);
  };
  const remove = async (keys) => {
    for (const key of keys) log(`${dryRun ? "would delete" : "delete"} ${key}`);
    if (dryRun) return;
    for (let i = 0; i < keys.length; i += 1000) await bucket.delete(keys.slice(i, i + 1000));
  };
  await pool(phases.firmware, concurrency, put);
  if (phases.answers[0]?.key === KEYS_KEY) await put(phases.answers[0]);
  await pool(phases.answers.filter((file) => file.key !== KEYS_KEY), concurrency, put);
  await remove(phases.deleteAnswers);
  for (const file of phases.meta) await put(file);
  await remove(phases.deleteFirmware);
  return {
    uploaded: phases.firmware.length + phases.answers.length + phases.meta.length,
    deleted: phases.deleteAnswers.length + phases.deleteFirmware.length,
    unchanged,
    skipped: site.skipped.length,
    seconds: (Date.now() - started) / 1000,
  };
}
