#!/usr/bin/env node
// Serve a built site through the Worker under Miniflare (workerd, the Workers runtime), configured
// from the same wrangler files a deploy uses. For the conformance tests and local trials;
// it listens on 127.0.0.1 only.
//
//   node serve.mjs assets|r2 SITE_DIR PORT [--base-url URL]
//
// assets: the site is staged exactly as `wrangler deploy` would upload it (stage.mjs);
// r2: the site is published into an in-memory R2 bucket by publish.mjs's code.
// Prints "otapub-edge ready <url>" on stdout when serving; the Worker's log lines (check-ins
// included) follow on stdout/stderr. SIGTERM or SIGINT stops it. In r2 mode a line "publish" on
// stdin publishes the site again into the running bucket and prints "otapub-edge published …".

import { createInterface } from "node:readline";

import { startWorker } from "./lib/local.mjs";

const [mode, siteDir, portText, ...rest] = process.argv.slice(2);
if (!["assets", "r2"].includes(mode) || !siteDir || !/^\d+$/.test(portText || "")) {
  console.error("usage: node serve.mjs assets|r2 SITE_DIR PORT [--base-url URL]");
  process.exit(2);
}
const baseUrl = rest[0] === "--base-url" ? rest[1] : "";

let worker;
try {
  worker = await startWorker(mode, siteDir, { port: Number(portText), baseUrl });
} catch (error) {
  console.error(error?.stack || error);
  process.exit(1);
}
let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  try {
    await worker.dispose();
  } finally {
    process.exit(0);
  }
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
console.log(`otapub-edge ready ${worker.url}`);
if (worker.bucket) {
  createInterface({ input: process.stdin }).on("line", async (line) => {
    if (line.trim() !== "publish") return;
    const result = await worker.republish();
    console.log(`otapub-edge published ${result.uploaded} uploaded ${result.deleted} deleted`);
  });
}
