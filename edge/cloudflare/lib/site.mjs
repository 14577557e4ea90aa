// Reading a site rendered by `otapub build`, for the two ways it reaches Cloudflare: staged as the
// Worker's static assets (stage.mjs) or mirrored into an R2 bucket (publish.mjs).
//
// Only what the shim serves is taken (build.json, keys.json, d/<TOKEN>/<MAC12>.json, f/<sha256>/<name>);
// symbolic links, a build's temporary files and anything else are left behind, so no upload can
// carry a file from outside the site.

import { createHash } from "node:crypto";
import { lstat, readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";

import { FIRMWARE_KEY, INDEX_FORMAT, KEYS_KEY, RECORD_KEY, isServedKey } from "../src/layout.mjs";

export class SiteError extends Error {}

async function* walk(root, rel, skipped) {
  let entries;
  try {
    entries = await readdir(path.join(root, rel), { withFileTypes: true });
  } catch (error) {
    if (error.code === "ENOENT") return;
    throw error;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const key = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isSymbolicLink()) skipped.push({ key, why: "symbolic link" });
    else if (entry.isDirectory()) yield* walk(root, key, skipped);
    else if (!entry.isFile()) skipped.push({ key, why: "not a regular file" });
    else if (!isServedKey(key)) skipped.push({ key, why: "not a file the shim serves" });
    else yield key;
  }
}

/**
 * The served files of a site: [{key, file, size, mtimeNs}] sorted by key, plus the index the
 * Worker reads (firmware size and mtime) and what was skipped and why.
 */
export async function scanSite(siteDir) {
  const root = path.resolve(siteDir);
  let info;
  try {
    info = await lstat(path.join(root, RECORD_KEY));
  } catch {
    throw new SiteError(`${root} is not a built site (no ${RECORD_KEY}): run \`otapub build\` first`);
  }
  if (!info.isFile()) throw new SiteError(`${path.join(root, RECORD_KEY)} is not a regular file`);
  const files = [];
  const skipped = [];
  let keys = false;
  try {
    keys = (await lstat(path.join(root, KEYS_KEY))).isFile();
  } catch {
    keys = false;
  }
  for (const top of [RECORD_KEY, KEYS_KEY, "d", "f"]) {
    if (top === KEYS_KEY && !keys) continue;
    const found = top === RECORD_KEY || top === KEYS_KEY ? [top] : walk(root, top, skipped);
    for await (const key of found) {
      const file = path.join(root, key);
      const st = await stat(file, { bigint: true });
      files.push({ key, file, size: Number(st.size), mtimeNs: st.mtimeNs });
    }
  }
  const firmware = {};
  for (const entry of files) {
    if (FIRMWARE_KEY.test(entry.key)) {
      firmware[entry.key] = { size: entry.size, mtime_ns: entry.mtimeNs.toString() };
    }
  }
  const index = Buffer.from(JSON.stringify({ format: INDEX_FORMAT, firmware }) + "\n");
  return { root, files, index, skipped };
}

export async function md5File(file) {
  return createHash("md5").update(await readFile(file)).digest("hex");
}

export function md5Bytes(data) {
  return createHash("md5").update(data).digest("hex");
}
