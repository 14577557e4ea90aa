// Staging (static-assets mode) and publishing (R2 mode): only served files, never a symlink,
// only what changed, and in the order that keeps every answer's firmware present.

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

import { INDEX_KEY } from "../src/layout.mjs";
import { publish } from "../lib/publish.mjs";
import { SiteError, scanSite } from "../lib/site.mjs";
import { stage } from "../lib/stage.mjs";
import { MemoryBucket, makeSite, write } from "../lib/testing.mjs";

test("a site is scanned for served files only; symlinks and strays are skipped", async () => {
  const site = await makeSite();
  const outside = await mkdtemp(path.join(os.tmpdir(), "otapub-outside-"));
  await writeFile(path.join(outside, "canary.txt"), "CANARY");
  await symlink(path.join(outside, "canary.txt"), path.join(site.root, "f", site.sha, "evil.bin"));
  await symlink(outside, path.join(site.root, "d", "LINKED00"));
  await write(site.root, `f/${site.sha}/panic.bin.otapub-tmp-123`, "half written");
  await write(site.root, "d/notes.txt", "stray");
  await write(site.root, "index.html", "stray");
  const scanned = await scanSite(site.root);
  assert.deepEqual(scanned.files.map((f) => f.key), ["build.json", site.answerKey, site.firmwareKey]);
  const skipped = Object.fromEntries(scanned.skipped.map((s) => [s.key, s.why]));
  assert.equal(skipped[`f/${site.sha}/evil.bin`], "symbolic link");
  assert.equal(skipped["d/LINKED00"], "symbolic link");
  assert.equal(skipped["d/notes.txt"], "not a file the shim serves");
  assert.equal(skipped[`f/${site.sha}/panic.bin.otapub-tmp-123`], "not a file the shim serves");
  const index = JSON.parse(scanned.index);
  assert.deepEqual(Object.keys(index.firmware), [site.firmwareKey]);
  assert.equal(index.firmware[site.firmwareKey].size, 3000);
  assert.match(index.firmware[site.firmwareKey].mtime_ns, /^\d+$/);
});

test("a directory without build.json is not a site", async () => {
  const empty = await mkdtemp(path.join(os.tmpdir(), "otapub-empty-"));
  await assert.rejects(scanSite(empty), SiteError);
});

test("stage writes the served files and the index, and enforces the documented limits", async () => {
  const site = await makeSite();
  const out = path.join(await mkdtemp(path.join(os.tmpdir(), "otapub-stage-")), "assets");
  const result = await stage(site.root, out);
  assert.equal(result.files, 4);
  assert.deepEqual(await readFile(path.join(out, site.firmwareKey)), await readFile(path.join(site.root, site.firmwareKey)));
  assert.ok(existsSync(path.join(out, INDEX_KEY)));
  await stage(site.root, out); // its own stage is replaced
  await assert.rejects(stage(site.root, out, { maxFiles: 3 }), /over the static-assets limit of 3/);
  await assert.rejects(stage(site.root, out, { maxFileBytes: 100 }), /deploy with R2 instead/);
});

test("stage refuses to replace a directory it did not write", async () => {
  const site = await makeSite();
  await assert.rejects(stage(site.root, site.root), /refusing to replace it/);
  assert.ok(existsSync(path.join(site.root, "build.json")));
});

test("publish uploads everything once, then only what changed, in the safe order", async () => {
  const site = await makeSite(Buffer.alloc(3000, 1));
  const bucket = new MemoryBucket();
  await bucket.put("unrelated/keep.txt", Buffer.from("not ours"));
  let result = await publish(site.root, bucket);
  assert.equal(result.uploaded, 4); // firmware, answer, index, build.json
  assert.deepEqual(bucket.ops.slice(1).map(([op, key]) => `${op} ${key}`), [
    `put ${site.firmwareKey}`, `put ${site.answerKey}`, `put ${INDEX_KEY}`, "put build.json"]);
  assert.equal(bucket.objects.get(site.firmwareKey).options.httpMetadata.contentType, "application/octet-stream");
  assert.match(bucket.objects.get(site.firmwareKey).options.customMetadata["mtime-ns"], /^\d+$/);

  bucket.ops = [];
  result = await publish(site.root, bucket);
  assert.deepEqual([result.uploaded, result.deleted, bucket.ops], [0, 0, []]);

  // a new release: the build writes new firmware and a new answer, and prunes the old firmware
  const old = site.firmwareKey;
  await rm(path.join(site.root, "f"), { recursive: true });
  const next = await makeSite(Buffer.alloc(4000, 2), site.root);
  await write(site.root, "d/0BADBEEF/112233445566.json", "{}"); // a device added
  bucket.ops = [];
  result = await publish(site.root, bucket);
  const order = bucket.ops.map(([op, key]) => `${op} ${key}`);
  // answers upload concurrently (a pool), so only the phases have an order: firmware, answers, meta, prune
  const phase = (line) => (line.startsWith("put f/") ? 0 : line.startsWith("put d/") ? 1 : line.startsWith("put ") ? 2 : 3);
  assert.deepEqual(order.map(phase), [...order.map(phase)].sort());
  assert.deepEqual(new Set(order), new Set([`put ${next.firmwareKey}`, "put d/0BADBEEF/112233445566.json",
    `put ${next.answerKey}`, `put ${INDEX_KEY}`, "put build.json", `delete ${old}`].filter((line) => order.includes(line))));
  assert.ok(order.includes("put d/0BADBEEF/112233445566.json") && order.includes(`put ${next.firmwareKey}`));
  if (order.includes("put build.json")) {
    assert.ok(order.indexOf(`put ${INDEX_KEY}`) < order.indexOf("put build.json"), "the index before the build record");
  }
  assert.equal(order.at(-1), `delete ${old}`);
  assert.ok(order.indexOf(`put ${next.firmwareKey}`) < order.indexOf(`put ${next.answerKey}`));
  assert.ok(bucket.objects.has("unrelated/keep.txt"), "keys outside the site are left alone");

  // a device removed: its answer is deleted before the firmware phase ends
  await rm(path.join(site.root, "d", "0BADBEEF"), { recursive: true });
  bucket.ops = [];
  result = await publish(site.root, bucket);
  assert.deepEqual(bucket.ops, [["delete", "d/0BADBEEF/112233445566.json"]]);
});

test("publish --dry-run changes nothing", async () => {
  const site = await makeSite();
  const bucket = new MemoryBucket();
  const lines = [];
  const result = await publish(site.root, bucket, { dryRun: true, log: (line) => lines.push(line) });
  assert.equal(result.uploaded, 4);
  assert.deepEqual(bucket.ops, []);
  assert.ok(lines.every((line) => line.startsWith("would ")));
});

test("publish lists a bucket across pages", async () => {
  const site = await makeSite();
  const bucket = new MemoryBucket();
  for (let i = 0; i < 2500; i += 1) await bucket.put(`d/${String(i).padStart(8, "0")}/AABBCCDDEEFF.json`, "{}");
  bucket.ops = [];
  const result = await publish(site.root, bucket);
  assert.equal(result.deleted, 2500);
  assert.equal(bucket.objects.size, 4);
});
