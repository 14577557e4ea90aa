// Stage a built site as the Worker's static assets (wrangler.jsonc → assets.directory).
//
// Hard links where the file system allows (a stage of 20,000 answers takes well under a second),
// copies with the same mtime otherwise. The stage is checked against the static-assets limits
// Cloudflare documents, so an oversized fleet fails here with advice, not half-way into a deploy.

import { copyFile, link, mkdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import path from "node:path";

import { INDEX_KEY } from "../src/layout.mjs";
import { SiteError, scanSite } from "./site.mjs";

// https://developers.cloudflare.com/workers/platform/limits/ (static assets)
export const FREE_MAX_FILES = 20000; // per Worker version on Workers Free (100,000 on Workers Paid)
export const MAX_FILE_BYTES = 25 * 1024 * 1024; // per file, every plan
const MARK = "# staged by otapub edge/cloudflare/lib/stage.mjs: removed and rewritten on every stage\n";

async function place(source, target, mtimeNs) {
  await mkdir(path.dirname(target), { recursive: true });
  try {
    await link(source, target);
  } catch {
    await copyFile(source, target);
    const seconds = Number(mtimeNs / 1000n) / 1e6;
    await utimes(target, seconds, seconds);
  }
}

/** Replace outDir by the served files of siteDir plus the Worker's index; returns a summary. */
export async function stage(siteDir, outDir, { maxFiles = FREE_MAX_FILES, maxFileBytes = MAX_FILE_BYTES } = {}) {
  const site = await scanSite(siteDir);
  const count = site.files.length + 1;
  if (count > maxFiles) {
    throw new SiteError(`the site has ${count} files, over the static-assets limit of ${maxFiles} per Worker `
      + "version: deploy with R2 instead (wrangler.r2.jsonc, see edge/cloudflare/README.md), or set "
      + "OTAPUB_ASSETS_MAX_FILES=100000 on Workers Paid");
  }
  const large = site.files.filter((f) => f.size > maxFileBytes);
  if (large.length) {
    throw new SiteError(`${large.map((f) => f.key).join(", ")}: larger than the ${maxFileBytes} bytes a `
      + "static asset may have: deploy with R2 instead (wrangler.r2.jsonc)");
  }
  const out = path.resolve(outDir);
  const marker = path.join(out, ".assetsignore");
  let existing = null;
  try {
    existing = await readFile(marker, "utf8");
  } catch {
    existing = null;
  }
  if (existing !== null && !existing.startsWith(MARK)) {
    throw new SiteError(`${out} is not a stage written by otapub: refusing to replace it`);
  }
  if (existing === null) {
    try {
      await readFile(path.join(out, "build.json"));
      throw new SiteError(`${out} holds files not staged by otapub: refusing to replace it`);
    } catch (error) {
      if (error instanceof SiteError) throw error;
    }
  }
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  // wrangler never uploads .assetsignore itself; listing it again does no harm
  await writeFile(marker, MARK + ".assetsignore\n");
  for (const file of site.files) await place(file.file, path.join(out, file.key), file.mtimeNs);
  await mkdir(path.dirname(path.join(out, INDEX_KEY)), { recursive: true });
  await writeFile(path.join(out, INDEX_KEY), site.index);
  return { files: count, skipped: site.skipped, out };
}
