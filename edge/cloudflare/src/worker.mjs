// otapub's edge shim as a Cloudflare Worker: the seed's device protocol (design.md §2) answered
// from the static site (§4), byte for byte what the Python shim (otapub/shim.py) answers.
//
// Storage: the static-assets binding ASSETS (wrangler.jsonc, with run_worker_first so that no
// asset is ever served around the Worker) or the R2 bucket SITE (wrangler.r2.jsonc). Either way
// every key the Worker reads is assembled from validated hex digits and a restricted file-name
// alphabet: no request can name a file outside the site, nor a site file the shim does not serve.
//
// Check-ins: one JSON log line per /api/firmware request ({"event": "otapub.checkin", ...}, the
// fields of the Python shim's check-in log); Workers Logs / Logpush keep them, and
// edge/cloudflare/checkins.py turns an export into a log that `otapub status --log` reads.

import {
  DEFAULT_CLIENTS, basicAuthToken, canonicalToken, compareVersions, httpDate, httpUpdateCheck, httpUpdateDecision,
  httpUpdateRequest, ifRangeOk, mac12 as toMac12, manifestTarget, notModified, parseQs, parseRange, parseVersion,
  pyJson, pyLen, pySlice, pyStrip, siteFirmware, utcNow, wsgiPath,
} from "./protocol.mjs";
import { seedFirmware } from "./layout.mjs";
import { openStore } from "./storage.mjs";

const ANSWER = /^\/d\/([0-9A-F]{8,64})\/([0-9A-F]{12})\.json$/;
const FIRMWARE = /^\/f\/([0-9a-f]{64})\/([A-Za-z0-9_-][A-Za-z0-9._-]{0,99})$/;
const SEED_FIRMWARE = /^\/firmware\/([A-Za-z0-9_-][A-Za-z0-9._-]{0,99})$/;
// Static manifests (esp32FOTA, ESPHome) beside a device's answer: the token in the path is the credential.
const MANIFEST = /^\/d\/([0-9A-F]{8,64})\/([0-9A-F]{12})\/(esp32fota|esphome)\.json$/;
// Arduino HTTPUpdate / ESP8266httpUpdate: the token in the path, X-Device-Auth or Basic authorization.
const HTTPUPDATE = /^\/api\/httpupdate(?:\/([0-9A-Fa-f]{1,64}))?$/;
const MAX_PATH = 512;
const MAX_QUERY = 2048;
const MAX_FIELD = 128;
const IMMUTABLE = "public, max-age=31536000, immutable";
const JSON_TYPE = "application/json";
const REQUIRED = ["device_id", "hardware", "version", "mac"];
const ENCODER = new TextEncoder();
const SIGNED_MARK = ENCODER.encode(',"signature":'); // a signed answer; the shim holds no key to check it

// check-in decisions (otapub/checkins.py)
const UP_TO_DATE = "up_to_date";
const UPDATE_OFFERED = "update_offered";
const HARDWARE_MISMATCH = "hardware_mismatch";
const NO_TARGET = "no_target";
const AUTH_FAILED = "auth_failed";
const BAD_REQUEST = "bad_request";
const CLIENT_NOT_DECLARED = "client_not_declared";
const ANSWER_SERVED = "answer_served";
const MANIFEST_SERVED = "manifest_served";
const CHECKIN_EVENT = "otapub.checkin";

/** Offer newer firmware; older only where the fleet explicitly allows a downgrade (shim.py _offer). */
function offer(comparison, allowDowngrade) {
  return comparison > 0 || (allowDowngrade && comparison !== 0);
}

function json(status, body, extra = []) {
  const data = ENCODER.encode(pyJson(body));
  const headers = [["Content-Type", JSON_TYPE], ["Content-Length", String(data.byteLength)],
    ["Cache-Control", "no-store"], ...extra];
  return new Response(data, { status, headers });
}

const notFound = () => json(404, { error: "Not found" });
const authFailed = () => json(401, { error: "Authentication failed" });

function sameToken(a, b) {
  // hmac.compare_digest: time independent of where the strings differ
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i += 1) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function contains(allowed, value) {
  // Python's `value in allowed` for what JSON can hold
  if (Array.isArray(allowed)) return allowed.includes(value);
  if (typeof allowed === "string") return allowed.includes(value);
  if (allowed && typeof allowed === "object") return Object.hasOwn(allowed, value);
  throw new TypeError("release_hardware is neither a list nor a string");
}

function field(answer, name) {
  if (!Object.hasOwn(answer, name)) throw new Error(`answer has no ${name}: rebuild the site`);
  return answer[name];
}

class Shim {
  constructor(env) {
    this.env = env;
    this.store = openStore(env);
    const base = env.OTAPUB_BASE_URL;
    this.baseUrl = base ? base.replace(/\/+$/, "") : null;
  }

  async route(request) {
    const url = new URL(request.url);
    const path = wsgiPath(url.pathname) || "/";
    const method = request.method;
    if (pyLen(path) > MAX_PATH) return notFound();
    if (path.startsWith("/admin/") || path === "/admin") return notFound(); // no admin API at the edge
    if (method !== "GET" && method !== "HEAD") {
      const known = path === "/api/firmware" || path === "/status" || path === "/keys.json" || FIRMWARE.test(path)
        || ANSWER.test(path) || SEED_FIRMWARE.test(path) || MANIFEST.test(path) || HTTPUPDATE.test(path);
      return known ? json(405, { error: "Method not allowed" }, [["Allow", "GET, HEAD"]]) : notFound();
    }
    if (path === "/api/firmware") return this.check(request, url);
    if (path === "/status") return this.status();
    if (path === "/keys.json") return this.keys();
    let match = FIRMWARE.exec(path);
    if (match) return this.file(request, `f/${match[1]}/${match[2]}`, true);
    match = ANSWER.exec(path);
    if (match) return this.answerFile(request, match[1], match[2]);
    match = MANIFEST.exec(path);
    if (match) return this.manifest(request, match[1], match[2], match[3]);
    match = HTTPUPDATE.exec(path);
    if (match) return this.httpUpdate(request, match[1] ?? null);
    match = SEED_FIRMWARE.exec(path);
    if (match) {
      const key = seedFirmware(await this.store.index(), match[1]);
      if (key !== null) return this.file(request, key, false);
    }
    return notFound();
  }

  // -- the device protocol ------------------------------------------------------------------------
  async check(request, url) {
    const query = url.search.slice(1);
    const record = { time: utcNow(), ip: request.headers.get("CF-Connecting-IP"), client: "seed" };
    const params = parseQs(pySlice(query, MAX_QUERY), 16) || new Map();
    const values = {};
    for (const name of REQUIRED) values[name] = pySlice((params.get(name) || [""])[0], MAX_FIELD);
    Object.assign(record, { mac: values.mac || null, device_id: values.device_id || null,
      hardware: values.hardware || null, version: values.version || null });
    const missing = REQUIRED.filter((name) => !values[name]);
    if (pyLen(query) > MAX_QUERY) return this.refuse(record, 400, "Query string too long");
    if (missing.length) return this.refuse(record, 400, `Missing required parameters: ${missing.join(", ")}`);
    let mac12;
    try {
      mac12 = toMac12(values.mac);
    } catch {
      return this.refuse(record, 400, "Invalid MAC address format");
    }
    record.mac = mac12.match(/../g).join(":");
    let reported;
    try {
      reported = parseVersion(values.version);
    } catch {
      return this.refuse(record, 400, "Invalid version format");
    }
    const { raw, answer } = await this.deviceAnswer(canonicalToken(request.headers.get("X-Device-Auth")), mac12,
      record);
    if (answer === null) return this.refuse(record, 401, "Authentication failed");
    const target = record.target;
    if (!(answer.clients || DEFAULT_CLIENTS).includes("seed")) {
      record.decision = CLIENT_NOT_DECLARED;
      return this.refuse(record, 403, "Device is not declared for client seed (fleet YAML `client:`)");
    }
    const allowed = answer.release_hardware ?? null;
    let body;
    if (!target) {
      record.decision = NO_TARGET;
      body = { update_available: false };
    } else if (allowed !== null && !contains(allowed, values.hardware)) {
      record.decision = HARDWARE_MISMATCH;
      body = { update_available: false };
    } else if (offer(compareVersions(parseVersion(target), reported), answer.allow_downgrade === true)) {
      record.decision = UPDATE_OFFERED;
      body = { update_available: true, firmware_version: target,
        firmware_url: this.absolute(field(answer, "firmware_url"), url),
        checksum: field(answer, "checksum"), sha256: field(answer, "sha256"), size: field(answer, "size") };
    } else {
      record.decision = UP_TO_DATE;
      body = { update_available: false };
    }
    record.status = 200;
    logCheckin(record);
    if (raw !== null && pyStrip(request.headers.get("X-OTA-Signed") || "") === "1" && includes(raw, SIGNED_MARK)) {
      return jsonWithSigned(body, raw);
    }
    return json(200, body);
  }

  async deviceAnswer(token, mac12, record) {
    // The answer at the path the token and the MAC name together: found only for the device's own token.
    const raw = token ? await this.store.bytes(`d/${token}/${mac12}.json`) : null;
    const answer = this.parseAnswer(raw, mac12);
    if (answer === null) record.decision = AUTH_FAILED;
    else record.target = answer.firmware_version ?? null;
    return { raw, answer };
  }

  refuse(record, status, error) {
    if (!("decision" in record)) record.decision = BAD_REQUEST;
    record.status = status;
    logCheckin(record);
    return json(status, { error });
  }

  parseAnswer(data, mac12) {
    if (data === null) return null;
    let answer;
    try {
      answer = JSON.parse(new TextDecoder("utf-8", { ignoreBOM: true }).decode(data));
    } catch {
      console.error(`answer for ${mac12} is not JSON: rebuild the site`);
      return null;
    }
    return answer && typeof answer === "object" && !Array.isArray(answer) ? answer : null;
  }

  absolute(target, url) {
    if (typeof target !== "string") throw new TypeError("firmware_url is not a string");
    if (!target.startsWith("/")) return target;
    if (this.baseUrl) return this.baseUrl + target;
    return `${url.protocol}//${url.host}${target}`;
  }

  async answerFile(request, token, mac12) {
    // ESP-IDF devices (client idf) read their answer here and compare versions themselves.
    const record = { time: utcNow(), ip: request.headers.get("CF-Connecting-IP"), client: "idf",
      mac: mac12.match(/../g).join(":") };
    const offered = canonicalToken(request.headers.get("X-Device-Auth")) || "";
    const data = sameToken(offered, token) ? await this.store.bytes(`d/${token}/${mac12}.json`) : null;
    if (data === null) {
      Object.assign(record, { decision: AUTH_FAILED, status: 401 });
      logCheckin(record);
      return authFailed();
    }
    const answer = this.parseAnswer(data, mac12);
    Object.assign(record, { target: answer?.firmware_version ?? null, decision: ANSWER_SERVED, status: 200 });
    logCheckin(record);
    return new Response(data, { status: 200, headers: [["Content-Type", JSON_TYPE],
      ["Content-Length", String(data.byteLength)], ["Cache-Control", "no-store"]] });
  }

  async manifest(request, token, mac12, client) {
    // Rendered by the build; a static host serves the same file. Logged here because the shim can.
    const data = await this.store.bytes(`d/${token}/${mac12}/${client}.json`);
    if (data === null) return notFound();
    logCheckin({ time: utcNow(), ip: request.headers.get("CF-Connecting-IP"), client, mac: mac12.match(/../g).join(":"),
      target: manifestTarget(client, data), decision: MANIFEST_SERVED, status: 200 });
    return new Response(data, { status: 200, headers: [["Content-Type", JSON_TYPE],
      ["Content-Length", String(data.byteLength)], ["Cache-Control", "no-store"]] });
  }

  async httpUpdate(request, pathToken) {
    // Arduino HTTPUpdate / ESP8266httpUpdate (otapub/shim.py Shim.httpupdate, clients.py)
    const headers = request.headers;
    const update = httpUpdateRequest((name) => headers.get(name));
    const record = { time: utcNow(), ip: headers.get("CF-Connecting-IP"), client: "httpupdate",
      mac: update.mac || null, device_id: null, hardware: null, version: update.version || null };
    const bad = httpUpdateCheck(update);
    if (bad !== null) {
      if (bad.mac12) record.mac = bad.mac12.match(/../g).join(":");
      return this.refuse(record, bad.status, bad.error);
    }
    const mac12 = toMac12(update.mac);
    record.mac = mac12.match(/../g).join(":");
    const offered = pathToken ?? headers.get("X-Device-Auth") ?? basicAuthToken(headers.get("Authorization"));
    const { answer } = await this.deviceAnswer(canonicalToken(offered), mac12, record);
    if (answer === null) return this.refuse(record, 401, "Authentication failed");
    const target = record.target;
    const result = httpUpdateDecision(update, answer);
    record.decision = result.decision;
    if (result.error !== null) return this.refuse(record, result.status, result.error);
    const extra = target ? [["x-version", target], ["x-MD5", field(answer, "md5")]] : [];
    if (result.send === "version") {
      record.status = 200;
      logCheckin(record);
      return json(200, { firmware_version: target }, extra);
    }
    if (result.send !== "image") {
      record.status = result.status;
      logCheckin(record);
      return new Response(null, { status: result.status, headers: [["Cache-Control", "no-store"]] });
    }
    const key = siteFirmware(answer);
    const info = key === null ? null : await this.store.stat(key);
    const body = info === null ? null : await this.store.body(key, 0, info.size, info.size);
    if (body === null) {
      console.error(`httpupdate: the firmware of ${mac12}'s answer is not in the site: rebuild it`);
      return this.refuse(record, 404, "Not found");
    }
    record.status = 200;
    logCheckin(record);
    // Content-Length, never chunked: HTTPUpdate reads with HTTP/1.0 and needs the size up front.
    return new Response(body, { status: 200, headers: [["Content-Type", "application/octet-stream"],
      ["Content-Length", String(info.size)], ["Cache-Control", "no-store"], ...extra] });
  }

  async keys() {
    // the public keys answers are signed with (present only when signing is on)
    const data = await this.store.bytes("keys.json");
    if (data === null) return notFound();
    return new Response(data, { status: 200, headers: [["Content-Type", JSON_TYPE],
      ["Content-Length", String(data.byteLength)], ["Cache-Control", "public, max-age=300"]] });
  }

  async status() {
    const record = await this.store.bytes("build.json");
    let site = null;
    if (record !== null) {
      try {
        site = JSON.parse(new TextDecoder("utf-8", { ignoreBOM: true }).decode(record));
      } catch {
        site = null;
      }
    }
    return json(200, { status: "ok", site, time: utcNow() });
  }

  // -- static files -------------------------------------------------------------------------------
  async file(request, key, immutable) {
    const info = await this.store.stat(key);
    if (info === null) return notFound();
    const { size, mtimeNs } = info;
    const seconds = Number(mtimeNs / 1000000000n);
    const etag = immutable ? `"${key.split("/")[1]}"` : `"${mtimeNs.toString(16)}-${size.toString(16)}"`;
    const headers = [["Content-Type", "application/octet-stream"], ["ETag", etag],
      ["Last-Modified", httpDate(seconds)], ["Accept-Ranges", "bytes"],
      ["Cache-Control", immutable ? IMMUTABLE : "public, max-age=300"]];
    if (notModified(request.headers, etag, seconds)) return new Response(null, { status: 304, headers });
    let start = 0;
    let end = size - 1;
    let status = 200;
    const spec = request.headers.get("Range");
    if (spec && ifRangeOk(request.headers, etag)) {
      const parsed = parseRange(spec, size);
      if (parsed === "unsatisfiable") {
        const body = ENCODER.encode(pyJson({ error: "Range not satisfiable" }));
        return new Response(body, { status: 416, headers: [["Content-Type", JSON_TYPE],
          ["Content-Length", String(body.byteLength)], ["Cache-Control", "no-store"],
          ["Content-Range", `bytes */${size}`]] });
      }
      if (parsed !== null) {
        [start, end] = parsed;
        status = 206;
        headers.push(["Content-Range", `bytes ${start}-${end}/${size}`]);
      }
    }
    const length = size ? end - start + 1 : 0;
    headers.push(["Content-Length", String(length)]);
    if (request.method === "HEAD" || length === 0) return new Response(null, { status, headers });
    const body = await this.store.body(key, start, length, size);
    if (body === null) return notFound(); // removed between the two reads
    return new Response(body, { status, headers });
  }
}

function includes(haystack, needle) {
  outer: for (let i = 0; i + needle.length <= haystack.length; i += 1) {
    for (let j = 0; j < needle.length; j += 1) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

function bytesStrip(data) {
  // Python's bytes.strip(): ASCII whitespace
  const space = (b) => b === 0x20 || (b >= 0x09 && b <= 0x0d);
  let start = 0;
  let end = data.length;
  while (start < end && space(data[start])) start += 1;
  while (end > start && space(data[end - 1])) end -= 1;
  return data.subarray(start, end);
}

function jsonWithSigned(body, signed) {
  // The seed-shaped body plus, as its last member, the stored signed answer byte for byte:
  // <body without its final "}">, "signed": <answer file>} (the Python shim's _json_with_signed)
  const head = ENCODER.encode(pyJson(body).slice(0, -1) + ', "signed": ');
  const stored = bytesStrip(signed);
  const data = new Uint8Array(head.length + stored.length + 1);
  data.set(head);
  data.set(stored, head.length);
  data[data.length - 1] = 0x7d; // "}"
  return new Response(data, { status: 200, headers: [["Content-Type", JSON_TYPE],
    ["Content-Length", String(data.byteLength)], ["Cache-Control", "no-store"]] });
}

function logCheckin(record) {
  console.log(JSON.stringify({ event: CHECKIN_EVENT, ...record }));
}

function headOnly(request, response) {
  // The Python shim under gunicorn answers HEAD with GET's headers (Content-Length included).
  if (request.method !== "HEAD" || response.body === null) return response;
  response.body.cancel().catch(() => {});
  return new Response(null, { status: response.status, headers: response.headers });
}

export default {
  async fetch(request, env) {
    let response;
    try {
      response = await new Shim(env).route(request);
    } catch (error) {
      // a bug or a broken site, never a device mistake: log it, answer JSON, keep serving
      console.error(`internal error on ${new URL(request.url).pathname.slice(0, MAX_PATH)}: ${error?.stack || error}`);
      response = json(500, { error: "Internal server error" });
    }
    return headOnly(request, response);
  },
};
