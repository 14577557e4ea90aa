// The shared vectors in tests/vectors/ hold for the Worker's port (src/protocol.mjs); the Python
// implementation is held to the same files by tests/test_vectors.py.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  basicAuthToken, canonicalToken, compareVersions, djb2, httpUpdateCheck, httpUpdateDecision, httpUpdateRequest, mac12,
  parseVersion, siteFirmware,
} from "../src/protocol.mjs";

const VECTORS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "tests", "vectors");
const load = (name) => JSON.parse(readFileSync(path.join(VECTORS, name), "utf8"));

const versions = load("versions.json");
const macs = load("macs.json");
const headers = load("token_headers.json");
const tokens = load("tokens.json");

test("versions parse to the same keys", () => {
  for (const { text, key } of versions.valid) assert.deepEqual(parseVersion(text), key, JSON.stringify(text));
});

test("non-versions are refused", () => {
  for (const text of versions.invalid) assert.throws(() => parseVersion(text), undefined, JSON.stringify(text));
});

test("versions compare numerically", () => {
  for (const { a, b, result } of versions.compare) {
    assert.equal(compareVersions(parseVersion(a), parseVersion(b)), result, `${a} ~ ${b}`);
  }
});

test("MAC spellings normalise alike", () => {
  for (const { text, mac12: expected } of macs.valid) assert.equal(mac12(text), expected, JSON.stringify(text));
  for (const text of macs.invalid) assert.throws(() => mac12(text), undefined, JSON.stringify(text));
});

test("X-Device-Auth values canonicalise alike", () => {
  for (const { header, canonical } of headers.cases) {
    assert.equal(canonicalToken(header), canonical, JSON.stringify(header));
  }
});

const SCHEMES = {
  "djb2-5381": (mac, secret) => djb2(mac, secret, 5381).toString(16).toUpperCase().padStart(8, "0"),
  "djb2-0": (mac, secret) => djb2(mac, secret, 0).toString(16).toUpperCase().padStart(8, "0"),
  "hmac-sha256": (mac, secret) => {
    const key = createHmac("sha256", Buffer.from(secret, "utf8")).update(mac, "ascii").digest();
    return createHmac("sha256", key).update(`otapub-token:${mac}`, "ascii").digest().subarray(0, 16)
      .toString("hex").toUpperCase();
  },
};

test("token vectors: wire forms canonicalise, known schemes compute", () => {
  assert.ok(tokens.length > 0);
  for (const vector of tokens) {
    assert.equal(canonicalToken(vector.wire), vector.canonical, vector.note);
    const compute = SCHEMES[vector.scheme];
    if (compute) assert.equal(compute(mac12(vector.mac), vector.secret), vector.canonical, vector.note);
  }
});

const httpupdate = load("httpupdate.json");

test("HTTPUpdate requests get the Python shim's decisions", () => {
  for (const c of httpupdate.cases) {
    const headers = new Headers(c.headers);
    const request = httpUpdateRequest((name) => headers.get(name));
    const answer = Object.fromEntries(Object.entries({ ...httpupdate.answer, ...(c.answer || {}) })
      .filter(([, v]) => v !== null));
    const got = httpUpdateCheck(request) || httpUpdateDecision(request, answer);
    assert.deepEqual([got.status, got.decision, got.error, got.send], [c.status, c.decision, c.error, c.send], c.name);
  }
});

test("Basic authorization carries the token as its password", () => {
  for (const { header, token } of httpupdate.basic) assert.equal(basicAuthToken(header), token, header);
});

test("an answer's firmware is served from the site only when it is the site's file", () => {
  for (const { answer, path } of httpupdate.firmware) assert.equal(siteFirmware(answer), path, answer.firmware_url);
});
