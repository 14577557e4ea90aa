// Ports of Python library behaviour the Worker depends on; expected values are Python's output
// (python3 -c 'import json, urllib.parse; ...'), so a change on either side shows here.

import assert from "node:assert/strict";
import { test } from "node:test";

import { INDEX_KEY, isServedKey, seedFirmware } from "../src/layout.mjs";
import {
  httpDate, parseHttpDate, parseQs, parseRange, pyJson, pySlice, pyStrip, pyUnquote, utcNow, wsgiPath,
} from "../src/protocol.mjs";

test("json.dumps(separators=(', ', ': ')): ensure_ascii, insertion order", () => {
  assert.equal(pyJson({ b: 1, a: [true, false, null], c: "é\u2028\n\"\\\x7f😀" }),
    '{"b": 1, "a": [true, false, null], "c": "\\u00e9\\u2028\\n\\"\\\\\\u007f\\ud83d\\ude00"}');
  assert.equal(pyJson({}), "{}");
  assert.equal(pyJson({ x: [] }), '{"x": []}');
  assert.equal(pyJson(1e-7), "1e-07");
  assert.equal(pyJson(0.5), "0.5");
});

test("urllib.parse.unquote and parse_qs", () => {
  // python3 -c 'from urllib.parse import unquote; print(ascii(unquote("...")))'
  assert.equal(pyUnquote("%C3%A9%zz%E2%82 %ED%A0%80%"), "\u00e9%zz\ufffd \ufffd\ufffd\ufffd%");
  assert.equal(pyUnquote("%c0%ae%F0%9F%98"), "\ufffd\ufffd\ufffd");
  assert.equal(pyUnquote("plain"), "plain");
  const params = parseQs("a=1&a=2&b&&c=x+y%2B&=v", 16);
  assert.deepEqual([...params], [["a", ["1", "2"]], ["b", [""]], ["c", ["x y+"]], ["", ["v"]]]);
  assert.equal(parseQs("&".repeat(16), 16), null, "17 fields");
  assert.notEqual(parseQs("&".repeat(15), 16), null);
  assert.deepEqual([...parseQs("", 16)], []);
});

test("strings as Python counts and strips them", () => {
  assert.equal(pySlice("😀".repeat(3), 2), "😀😀");
  assert.equal(pyStrip("\x1c\x85 a \u3000"), "a");
  assert.equal(pyStrip("\ufeffa"), "\ufeffa");
  assert.equal(wsgiPath("/f/%2e%2E/%00%ff%zz"), "/f/../\x00\xff%zz");
});

test("single byte ranges as the Python shim reads them", () => {
  assert.deepEqual(parseRange("bytes=10-19", 100), [10, 19]);
  assert.deepEqual(parseRange("bytes=-5", 100), [95, 99]);
  assert.deepEqual(parseRange("bytes=-500", 100), [0, 99]);
  assert.deepEqual(parseRange("bytes=90-", 100), [90, 99]);
  assert.deepEqual(parseRange("bytes=90-1000", 100), [90, 99]);
  assert.equal(parseRange("bytes=100-", 100), "unsatisfiable");
  assert.equal(parseRange("bytes=-0", 100), "unsatisfiable");
  assert.equal(parseRange("bytes=5-2", 100), null);
  assert.equal(parseRange("bytes=0-1,5-6", 100), null);
  assert.equal(parseRange("bytes=-", 100), null);
  assert.deepEqual(parseRange(" bytes=0-0\t", 100), [0, 0]);
});

test("HTTP dates as email.utils formats and parses them", () => {
  assert.equal(httpDate(1764232200.9), "Thu, 27 Nov 2025 08:30:00 GMT");
  assert.equal(parseHttpDate("Thu, 27 Nov 2025 08:30:00 GMT"), 1764232200);
  assert.equal(parseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777);
  assert.equal(parseHttpDate("Sun Nov  6 08:49:37 1994"), 784111777); // asctime; no zone: read as UTC
  assert.equal(parseHttpDate("27 Nov 2025 09:30 +0100"), 1764232200);
  assert.equal(parseHttpDate("27 Nov 2025 08:30:00 -0000"), 1764232200);
  assert.equal(parseHttpDate("31 Feb 2025 08:30:00 GMT"), null);
  assert.equal(parseHttpDate("garbage"), null);
  assert.match(utcNow(new Date(Date.UTC(2025, 0, 2, 3, 4, 5, 678))), /^2025-01-02T03:04:05\.678000Z$/);
});

test("only served keys, and the seed's /firmware/<name> picks the newest", () => {
  assert.ok(isServedKey("build.json") && isServedKey("keys.json"));
  assert.ok(isServedKey(`f/${"a".repeat(64)}/x.bin`) && isServedKey("d/0000ABCD/AABBCCDDEEFF.json"));
  for (const key of [INDEX_KEY, "index.html", `f/${"a".repeat(64)}/x.bin.otapub-tmp-1`, "d/abcd1234/AABBCCDDEEFF.json",
    `f/${"a".repeat(64)}/.hidden`, "f/../build.json"]) {
    assert.ok(!isServedKey(key), key);
  }
  const index = { firmware: {
    [`f/${"a".repeat(64)}/fw.bin`]: { size: 1, mtime_ns: "1000000000000000001" },
    [`f/${"b".repeat(64)}/fw.bin`]: { size: 1, mtime_ns: "1000000000000000002" },
    [`f/${"c".repeat(64)}/other.bin`]: { size: 1, mtime_ns: "9" },
  } };
  assert.equal(seedFirmware(index, "fw.bin"), `f/${"b".repeat(64)}/fw.bin`);
  assert.equal(seedFirmware(index, "none.bin"), null);
});
