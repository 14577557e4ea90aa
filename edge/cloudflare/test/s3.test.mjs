// publish.mjs's production path, R2's S3-compatible API, against a small S3 stand-in on
// 127.0.0.1: signed requests, ListObjectsV2 paging, metadata headers, deletes.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { test } from "node:test";

import { publish } from "../lib/publish.mjs";
import { S3Bucket } from "../lib/s3.mjs";
import { makeSite } from "../lib/testing.mjs";

function fakeS3() {
  const objects = new Map();
  const requests = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const url = new URL(req.url, "http://s3");
      requests.push({ method: req.method, path: url.pathname, query: url.search, headers: req.headers });
      const auth = req.headers.authorization || "";
      if (!/^AWS4-HMAC-SHA256 Credential=AKIDTEST\/\d{8}\/auto\/s3\/aws4_request, SignedHeaders=.*host.*, Signature=[0-9a-f]{64}$/.test(auth)
          || !req.headers["x-amz-date"] || !req.headers["x-amz-content-sha256"]) {
        res.writeHead(403).end("<Error><Code>AccessDenied</Code><Message>unsigned</Message></Error>");
        return;
      }
      const [, bucket, ...rest] = url.pathname.split("/");
      const key = rest.map(decodeURIComponent).join("/");
      if (bucket !== "site-bucket") {
        res.writeHead(404).end("<Error><Code>NoSuchBucket</Code><Message>no</Message></Error>");
      } else if (req.method === "GET" && !key) {
        const limit = Number(url.searchParams.get("max-keys"));
        const start = Number(url.searchParams.get("continuation-token") || 0);
        const keys = [...objects.keys()].sort();
        const page = keys.slice(start, start + limit);
        const more = start + limit < keys.length;
        const contents = page.map((k) => `<Contents><Key>${k.replaceAll("&", "&amp;")}</Key><Size>${objects.get(k).data.length}</Size>`
          + `<ETag>&quot;${createHash("md5").update(objects.get(k).data).digest("hex")}&quot;</ETag></Contents>`).join("");
        res.writeHead(200, { "Content-Type": "application/xml" }).end(`<?xml version="1.0"?><ListBucketResult>${contents}`
          + `<IsTruncated>${more}</IsTruncated>${more ? `<NextContinuationToken>${start + limit}</NextContinuationToken>` : ""}`
          + "</ListBucketResult>");
      } else if (req.method === "PUT") {
        objects.set(key, { data: Buffer.concat(chunks), headers: req.headers });
        res.writeHead(200, { ETag: '"x"' }).end();
      } else if (req.method === "DELETE") {
        objects.delete(key);
        res.writeHead(204).end();
      } else {
        res.writeHead(400).end();
      }
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve({ server, objects, requests,
      endpoint: `http://127.0.0.1:${server.address().port}` }));
  });
}

test("publish through the S3 API: signed, paged, with metadata, then a no-op", async (t) => {
  const s3 = await fakeS3();
  t.after(() => s3.server.close());
  for (let i = 0; i < 3; i += 1) s3.objects.set(`d/0000000${i}/AABBCCDDEEFF.json`, { data: Buffer.from("{}") });
  const site = await makeSite();
  const bucket = new S3Bucket({ endpoint: s3.endpoint, bucket: "site-bucket", accessKeyId: "AKIDTEST",
    secretAccessKey: "secret" });
  const pages = await bucket.list({ limit: 2 });
  assert.equal(pages.objects.length, 2);
  assert.equal(pages.truncated, true);

  let result = await publish(site.root, bucket);
  assert.equal(result.uploaded, 4);
  assert.equal(result.deleted, 3);
  const firmware = s3.objects.get(site.firmwareKey);
  assert.equal(firmware.headers["content-type"], "application/octet-stream");
  assert.match(firmware.headers["x-amz-meta-mtime-ns"], /^\d+$/);
  assert.equal(firmware.data.length, 3000);
  assert.deepEqual([...s3.objects.keys()].sort(),
    ["_otapub/index.json", "build.json", site.answerKey, site.firmwareKey].sort());

  s3.requests.length = 0;
  result = await publish(site.root, bucket);
  assert.deepEqual([result.uploaded, result.deleted], [0, 0]);
  assert.deepEqual(s3.requests.map((r) => r.method), ["GET"]);
});

test("an S3 error is reported with its code", async (t) => {
  const s3 = await fakeS3();
  t.after(() => s3.server.close());
  const bucket = new S3Bucket({ endpoint: s3.endpoint, bucket: "other", accessKeyId: "AKIDTEST",
    secretAccessKey: "secret" });
  await assert.rejects(bucket.list(), /HTTP 404 NoSuchBucket/);
});
