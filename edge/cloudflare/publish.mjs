#!/usr/bin/env node
// Mirror the built site into the R2 bucket of wrangler.r2.jsonc (only changed objects).
//   node publish.mjs [--site DIR] [--dry-run] [--local [PERSIST_DIR]]
//
// Remote (default), through R2's S3-compatible API:
//   CLOUDFLARE_ACCOUNT_ID, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY (an R2 API token with Object
//   Read & Write on the bucket); R2_BUCKET overrides wrangler.r2.jsonc's bucket_name; R2_ENDPOINT
//   overrides https://<account>.r2.cloudflarestorage.com (e.g. a jurisdiction endpoint).
// --local: into the local bucket `wrangler dev -c wrangler.r2.jsonc` serves
//   (PERSIST_DIR: .wrangler/state/v3/r2).

import path from "node:path";
import { parseArgs } from "node:util";

import { DEFAULT_SITE, HERE, readWrangler } from "./lib/config.mjs";
import { publish } from "./lib/publish.mjs";
import { SiteError } from "./lib/site.mjs";

const { values } = parseArgs({ options: {
  site: { type: "string" }, "dry-run": { type: "boolean" }, local: { type: "boolean" },
  persist: { type: "string" }, quiet: { type: "boolean" } } });
const site = path.resolve(values.site || process.env.OTAPUB_SITE_DIR || DEFAULT_SITE);
const { config } = readWrangler("wrangler.r2.jsonc");
const binding = (config.r2_buckets || []).find((b) => b.binding === "SITE");
const bucketName = process.env.R2_BUCKET || binding?.bucket_name;

function fail(message) {
  console.error(`publish: ${message}`);
  process.exit(1);
}

let bucket;
let dispose = async () => {};
if (values.local) {
  const { Miniflare } = await import("miniflare");
  const mf = new Miniflare({ modules: true, script: "export default {}", r2Buckets: { SITE: bucketName },
    r2Persist: path.resolve(values.persist || path.join(HERE, ".wrangler", "state", "v3", "r2")) });
  bucket = await mf.getR2Bucket("SITE");
  dispose = () => mf.dispose();
} else {
  const { S3Bucket } = await import("./lib/s3.mjs");
  const account = process.env.CLOUDFLARE_ACCOUNT_ID;
  const missing = ["R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"].filter((name) => !process.env[name]);
  if (!account && !process.env.R2_ENDPOINT) missing.unshift("CLOUDFLARE_ACCOUNT_ID");
  if (missing.length) fail(`set ${missing.join(", ")} (see edge/cloudflare/README.md)`);
  if (!bucketName) fail("no bucket: set R2_BUCKET or r2_buckets in wrangler.r2.jsonc");
  bucket = new S3Bucket({ endpoint: process.env.R2_ENDPOINT || `https://${account}.r2.cloudflarestorage.com`,
    bucket: bucketName, accessKeyId: process.env.R2_ACCESS_KEY_ID,
    secretAccessKey: process.env.R2_SECRET_ACCESS_KEY });
}
try {
  const log = values.quiet ? () => {} : (line) => console.error(`publish: ${line}`);
  const result = await publish(site, bucket, { dryRun: values["dry-run"], log });
  console.error(`publish: ${bucketName}${values.local ? " (local)" : ""}: ${result.uploaded} uploaded, `
    + `${result.deleted} deleted, ${result.unchanged} unchanged${values["dry-run"] ? " (dry run)" : ""} `
    + `[${result.seconds.toFixed(2)}s]`);
} catch (error) {
  if (error instanceof SiteError) fail(error.message);
  fail(`${error.message}${error.cause ? ` (${error.cause.code || error.cause.message})` : ""}`);
} finally {
  await dispose();
}
