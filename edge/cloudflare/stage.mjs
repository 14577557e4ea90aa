#!/usr/bin/env node
// Stage the built site as the Worker's static assets (wrangler.jsonc runs this before a deploy).
//   node stage.mjs [SITE_DIR [OUT_DIR]]
// SITE_DIR: $OTAPUB_SITE_DIR, else ../../site. OUT_DIR: dist/assets (wrangler.jsonc's assets.directory).
// OTAPUB_ASSETS_MAX_FILES: the plan's file limit (20000 on Workers Free, 100000 on Workers Paid).

import path from "node:path";

import { DEFAULT_SITE, HERE } from "./lib/config.mjs";
import { SiteError } from "./lib/site.mjs";
import { FREE_MAX_FILES, stage } from "./lib/stage.mjs";

const [siteArg, outArg] = process.argv.slice(2);
const site = path.resolve(siteArg || process.env.OTAPUB_SITE_DIR || DEFAULT_SITE);
const out = path.resolve(outArg || path.join(HERE, "dist", "assets"));
const maxFiles = Number(process.env.OTAPUB_ASSETS_MAX_FILES || FREE_MAX_FILES);
try {
  const started = Date.now();
  const result = await stage(site, out, { maxFiles });
  for (const item of result.skipped) console.error(`stage: skipped ${item.key}: ${item.why}`);
  console.error(`stage: ${result.files} files from ${site} staged in ${path.relative(process.cwd(), out) || "."} `
    + `[${((Date.now() - started) / 1000).toFixed(2)}s]`);
} catch (error) {
  if (!(error instanceof SiteError)) throw error;
  console.error(`stage: ${error.message}`);
  process.exit(1);
}
