// The Worker under Miniflare (workerd, the Workers runtime), configured from the same wrangler
// files a deploy uses: serve.mjs (tests, local trials) and the node tests start it through here.

import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { Miniflare } from "miniflare";

import { HERE, readWrangler } from "./config.mjs";
import { publish } from "./publish.mjs";
import { stage } from "./stage.mjs";

/**
 * Start the Worker over siteDir: mode "assets" stages the site as static assets (as `wrangler
 * deploy` would upload it), "r2" publishes it into an in-memory R2 bucket (as publish.mjs does).
 * Returns {mf, url, bucket, republish(), dispose()}; port 0 picks a free port.
 */
export async function startWorker(mode, siteDir, { port = 0, baseUrl = "" } = {}) {
  const { config } = readWrangler(mode === "assets" ? "wrangler.jsonc" : "wrangler.r2.jsonc");
  const main = path.join(HERE, config.main);
  const src = path.dirname(main);
  const modules = (await readdir(src)).filter((name) => name.endsWith(".mjs")).sort()
    .map((name) => ({ type: "ESModule", path: path.join(src, name) }));
  modules.sort((a, b) => (b.path === main) - (a.path === main)); // the entry point first
  const options = {
    modules,
    modulesRoot: src,
    compatibilityDate: config.compatibility_date,
    compatibilityFlags: config.compatibility_flags || [],
    bindings: { ...config.vars, ...(baseUrl ? { OTAPUB_BASE_URL: baseUrl } : {}) },
    host: "127.0.0.1",
    port,
  };
  let cleanup = async () => {};
  if (mode === "assets") {
    const out = await mkdtemp(path.join(os.tmpdir(), "otapub-edge-assets-"));
    cleanup = () => rm(out, { recursive: true, force: true });
    await stage(siteDir, out, { maxFiles: 100000 });
    const assets = config.assets;
    options.assets = {
      directory: out,
      binding: assets.binding,
      routerConfig: { has_user_worker: true, invoke_user_worker_ahead_of_assets: assets.run_worker_first === true },
      assetConfig: { html_handling: assets.html_handling, not_found_handling: assets.not_found_handling },
    };
  } else if (mode === "r2") {
    options.r2Buckets = Object.fromEntries(config.r2_buckets.map((b) => [b.binding, b.bucket_name]));
  } else {
    throw new Error(`unknown mode ${mode} (assets or r2)`);
  }
  const mf = new Miniflare(options);
  let url;
  try {
    url = await mf.ready;
  } catch (error) {
    await cleanup();
    throw error;
  }
  const bucket = mode === "r2" ? await mf.getR2Bucket("SITE") : null;
  const republish = () => publish(siteDir, bucket);
  if (bucket) await republish();
  return {
    mf, url: url.href.replace(/\/$/, ""), bucket, republish,
    async dispose() {
      try {
        await mf.dispose();
      } finally {
        await cleanup();
      }
    },
  };
}
