// The Worker itself under Miniflare, in both storage modes, on a site made here (the full
// conformance suite against the Python shim is tests/test_shim.py).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { readWrangler } from "../lib/config.mjs";
import { startWorker } from "../lib/local.mjs";
import { MAC12, TOKEN, makeSite } from "../lib/testing.mjs";

const CHECK = "/api/firmware?device_id=PanicAlarm_EEFF&hardware=FireBeetle+2+ESP32-C6&version=1.3.7"
  + "&mac=AA:BB:CC:DD:EE:FF";

test("both wrangler configurations run the same Worker, assets only behind it", () => {
  const assets = readWrangler("wrangler.jsonc").config;
  const r2 = readWrangler("wrangler.r2.jsonc").config;
  assert.equal(assets.assets.run_worker_first, true, "tokens stop mattering if assets are served around the Worker");
  assert.equal(assets.assets.binding, "ASSETS");
  assert.equal(assets.vars.OTAPUB_STORAGE, "assets");
  assert.equal(r2.vars.OTAPUB_STORAGE, "r2");
  assert.equal(r2.r2_buckets[0].binding, "SITE");
  assert.equal(r2.assets, undefined);
  assert.equal(assets.main, r2.main);
  assert.equal(assets.compatibility_date, r2.compatibility_date);
});

for (const mode of ["assets", "r2"]) {
  test(`${mode}: the device protocol end to end`, async (t) => {
    const firmware = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7) % 256));
    const site = await makeSite(firmware);
    const worker = await startWorker(mode, site.root);
    t.after(() => worker.dispose());
    const get = (path, headers = {}, method = "GET") => fetch(worker.url + path, { headers, method });

    let response = await get(CHECK, { "X-Device-Auth": TOKEN.toLowerCase() });
    assert.equal(response.status, 200);
    assert.equal(await response.text(), `{"update_available": true, "firmware_version": "1.3.8", "firmware_url": `
      + `"${worker.url}/${site.firmwareKey}", "checksum": "${site.md5}", "sha256": "${site.sha}", "size": 5000}`);

    response = await get(CHECK, { "X-Device-Auth": "DEADBEEF" });
    assert.deepEqual([response.status, await response.text()], [401, '{"error": "Authentication failed"}']);
    response = await get(`/d/${TOKEN}/${MAC12}.json`);
    assert.equal(response.status, 401, "an answer file is never served without its token");
    await response.arrayBuffer();

    response = await get(`/${site.firmwareKey}`);
    assert.equal(response.headers.get("etag"), `"${site.sha}"`);
    assert.equal(response.headers.get("cache-control"), "public, max-age=31536000, immutable");
    const body = Buffer.from(await response.arrayBuffer());
    assert.equal(createHash("md5").update(body).digest("hex"), site.md5);

    response = await get(`/${site.firmwareKey}`, { Range: "bytes=4096-4099" });
    assert.equal(response.status, 206);
    assert.equal(response.headers.get("content-range"), "bytes 4096-4099/5000");
    assert.deepEqual(Buffer.from(await response.arrayBuffer()), firmware.subarray(4096, 4100));

    response = await get(`/${site.firmwareKey}`, { "If-None-Match": `"${site.sha}"` });
    assert.equal(response.status, 304);
    response = await get("/_otapub/index.json");
    assert.equal(response.status, 404, "the index is the Worker's, not a served file");
    await response.arrayBuffer();
    response = await get("/build.json");
    assert.equal(response.status, 404);
    await response.arrayBuffer();

    response = await get("/status");
    const status = await response.json();
    assert.equal(status.site.devices, 1);
  });
}
