// The device protocol's pure parts, ported from the Python shim (otapub/shim.py, tokens.py,
// mac.py, versions.py) so that the Worker answers byte for byte what gunicorn answers.
// No platform API here: the Worker and the node tests import the same file, and the shared
// vectors in tests/vectors/*.json are checked against it (test/vectors.test.mjs).

// Python's str.strip() with no argument strips what str.isspace() calls whitespace; JS trim()
// strips a slightly different set (it keeps \x1c-\x1f and \x85, and drops \ufeff).
const PY_SPACE = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g");
const PY_SPLIT = new RegExp(`[${PY_SPACE}]+`);

/** Python's ``text.strip()``. */
export function pyStrip(text) {
  return text.replace(PY_STRIP, "");
}

// -- tokens (otapub/tokens.py) -------------------------------------------------------------------
const HEX_TOKEN = /^[0-9A-Fa-f]{1,64}$/;
export const DJB2_DIGITS = 8;

/** Canonical form of an X-Device-Auth value (upper case, djb2 zero-padded), or null. */
export function canonicalToken(header) {
  if (header === null || header === undefined) return null;
  const value = pyStrip(header);
  if (!HEX_TOKEN.test(value)) return null;
  return value.toUpperCase().padStart(DJB2_DIGITS, "0");
}

/** djb2 over the UTF-8 bytes of MAC12 + secret, 32-bit wrap; `seed` 5381 or 0. */
export function djb2(mac12, secret, seed) {
  let value = seed >>> 0;
  for (const byte of new TextEncoder().encode(mac12 + secret)) {
    value = (Math.imul(value, 33) + byte) >>> 0;
  }
  return value;
}

// -- MAC addresses (otapub/mac.py) ---------------------------------------------------------------
const MAC_SPELLINGS = new RegExp(
  "^(?:(?:[0-9A-Fa-f]{2}([:\\-])(?:[0-9A-Fa-f]{2}\\1){4}[0-9A-Fa-f]{2})"
  + "|(?:[0-9A-Fa-f]{4}\\.[0-9A-Fa-f]{4}\\.[0-9A-Fa-f]{4})"
  + "|(?:[0-9A-Fa-f]{12}))$");

/** The 12 upper-case hex digits of a MAC in any accepted spelling; throws on anything else. */
export function mac12(text) {
  if (typeof text !== "string") throw new Error("a MAC address must be a string");
  const stripped = pyStrip(text);
  if (!MAC_SPELLINGS.test(stripped)) throw new Error(`${JSON.stringify(text)} is not a MAC address`);
  return stripped.replace(/[:\-.]/g, "").toUpperCase();
}

// -- versions (otapub/versions.py) ---------------------------------------------------------------
const VERSION = /^[vV]?([0-9]{1,9}(?:\.[0-9]{1,9})*)$/;

/** "1.3.7" / "v1.3.7" → [1, 3, 7], trailing zeros dropped; throws on anything else. */
export function parseVersion(text) {
  if (typeof text !== "string") throw new Error("a version must be a string of dotted numbers");
  const match = VERSION.exec(pyStrip(text));
  if (!match) throw new Error(`${JSON.stringify(text)} is not a version of dotted numbers`);
  const parts = match[1].split(".").map(Number);
  while (parts.length > 1 && parts[parts.length - 1] === 0) parts.pop();
  return parts;
}

/** Python tuple ordering of two parsed versions: -1, 0 or 1. */
export function compareVersions(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i += 1) {
    if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return a.length === b.length ? 0 : (a.length < b.length ? -1 : 1);
}

// -- query strings (urllib.parse.parse_qs, Python 3.10+) -----------------------------------------
const HEX2 = /^[0-9A-Fa-f]{2}/;
const UTF8 = new TextDecoder("utf-8", { fatal: false });

function unquoteAscii(text) {
  // unquote_to_bytes(text).decode("utf-8", "replace") for an ASCII run
  const bytes = [];
  const bits = text.split("%");
  for (const char of bits[0]) bytes.push(char.charCodeAt(0));
  for (const item of bits.slice(1)) {
    let rest = item;
    if (HEX2.test(item)) {
      bytes.push(parseInt(item.slice(0, 2), 16));
      rest = item.slice(2);
    } else {
      bytes.push(0x25);
    }
    for (const char of rest) bytes.push(char.charCodeAt(0));
  }
  return UTF8.decode(new Uint8Array(bytes));
}

/** urllib.parse.unquote(text) with its defaults (UTF-8, errors="replace"). */
export function pyUnquote(text) {
  if (!text.includes("%")) return text;
  return text.replace(/[\x00-\x7f]+/g, unquoteAscii);
}

/**
 * parse_qs(query, keep_blank_values=True, max_num_fields=maxFields) as a Map name → [values];
 * null where Python raises ValueError (too many fields).
 */
export function parseQs(query, maxFields) {
  if (maxFields !== undefined && query) {
    const fields = query.split("&").length; // 1 + query.count("&")
    if (maxFields < fields) return null;
  }
  const result = new Map();
  for (const nameValue of query ? query.split("&") : []) {
    if (!nameValue) continue;
    const at = nameValue.indexOf("=");
    const name = at < 0 ? nameValue : nameValue.slice(0, at);
    const value = at < 0 ? "" : nameValue.slice(at + 1);
    const key = pyUnquote(name.replaceAll("+", " "));
    if (!result.has(key)) result.set(key, []);
    result.get(key).push(pyUnquote(value.replaceAll("+", " ")));
  }
  return result;
}

/** Python's text[:n] (code points, not UTF-16 units). */
export function pySlice(text, n) {
  if (text.length <= n) return text;
  return Array.from(text).slice(0, n).join("");
}

/** len(text) in code points. */
export function pyLen(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

/** gunicorn's PATH_INFO: percent-decoded bytes read as Latin-1. */
export function wsgiPath(pathname) {
  if (!pathname.includes("%")) return pathname;
  return pathname.replace(/%([0-9A-Fa-f]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
}

// -- JSON exactly as Python's json.dumps(value, separators=(", ", ": ")) --------------------------
function pyString(text) {
  let out = '"';
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    const char = text[i];
    if (char === '"') out += '\\"';
    else if (char === "\\") out += "\\\\";
    else if (char === "\n") out += "\\n";
    else if (char === "\r") out += "\\r";
    else if (char === "\t") out += "\\t";
    else if (char === "\b") out += "\\b";
    else if (char === "\f") out += "\\f";
    else if (code < 0x20 || code > 0x7e) out += "\\u" + code.toString(16).padStart(4, "0");
    else out += char;
  }
  return out + '"';
}

function pyNumber(value) {
  if (!Number.isFinite(value)) return value > 0 ? "Infinity" : (value < 0 ? "-Infinity" : "NaN");
  if (Number.isInteger(value) && Math.abs(value) < 1e16) return String(value);
  // float repr: exponent with at least two digits (1e-07, 1e+16)
  return String(value).replace(/e([+-])(\d)$/, "e$10$2");
}

/** json.dumps(value, separators=(", ", ": ")): ensure_ascii, insertion order. */
export function pyJson(value) {
  if (value === null || value === undefined) return "null";
  if (value === true) return "true";
  if (value === false) return "false";
  if (typeof value === "number") return pyNumber(value);
  if (typeof value === "string") return pyString(value);
  if (Array.isArray(value)) return "[" + value.map(pyJson).join(", ") + "]";
  return "{" + Object.entries(value).map(([k, v]) => pyString(k) + ": " + pyJson(v)).join(", ") + "}";
}

// -- time ----------------------------------------------------------------------------------------
/** otapub.checkins.utc_now(): 2025-01-02T03:04:05.678000Z (microseconds, ms precision here). */
export function utcNow(date = new Date()) {
  return date.toISOString().replace("Z", "000Z");
}

/** email.utils.formatdate(seconds, usegmt=True). */
export function httpDate(seconds) {
  return new Date(Math.floor(seconds) * 1000).toUTCString();
}

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
  "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
  "november", "december"];
const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const ZONES = { UT: 0, UTC: 0, GMT: 0, Z: 0, AST: -400, ADT: -300, EST: -500, EDT: -400, CST: -600,
  CDT: -500, MST: -700, MDT: -600, PST: -800, PDT: -700 };

function pyInt(text) {
  const match = /^[+-]?\d+(?:_\d+)*$/.exec(pyStrip(String(text)));
  if (!match) throw new Error("not an int");
  return parseInt(match[0].replaceAll("_", ""), 10);
}

/** email.utils.parsedate_to_datetime(text).timestamp() in seconds, or null (ValueError). */
export function parseHttpDate(text) {
  // A port of email._parseaddr._parsedate_tz; a naive result is read as UTC.
  if (!text) return null;
  let data = pyStrip(text).split(PY_SPLIT).filter(Boolean);
  if (!data.length) return null;
  if (data[0].endsWith(",") || DAYS.includes(data[0].toLowerCase())) {
    data.shift();
  } else {
    const i = data[0].lastIndexOf(",");
    if (i >= 0) data[0] = data[0].slice(i + 1);
  }
  if (data.length === 3) {
    const stuff = data[0].split("-");
    if (stuff.length === 3) data = [...stuff, ...data.slice(1)];
  }
  if (data.length === 4) {
    const s = data[3];
    let i = s.indexOf("+");
    if (i === -1) i = s.indexOf("-");
    if (i > 0) data.splice(3, 1, s.slice(0, i), s.slice(i));
    else data.push("");
  }
  if (data.length < 5) return null;
  let [dd, mm, yy, tm, tz] = data.slice(0, 5);
  if (!(dd && mm && yy)) return null;
  mm = mm.toLowerCase();
  if (!MONTHS.includes(mm)) {
    [dd, mm] = [mm, dd.toLowerCase()];
    if (!MONTHS.includes(mm)) return null;
  }
  let month = MONTHS.indexOf(mm) + 1;
  if (month > 12) month -= 12;
  if (dd.endsWith(",")) dd = dd.slice(0, -1);
  if (yy.indexOf(":") > 0) [yy, tm] = [tm, yy];
  if (yy.endsWith(",")) {
    yy = yy.slice(0, -1);
    if (!yy) return null;
  }
  if (!/^\d/.test(yy)) [yy, tz] = [tz, yy];
  if (tm.endsWith(",")) tm = tm.slice(0, -1);
  let parts = tm.split(":");
  if (parts.length === 2) parts.push("0");
  else if (parts.length === 1 && parts[0].includes(".")) {
    parts = parts[0].split(".");
    if (parts.length === 2) parts.push("0");
    else if (parts.length !== 3) return null;
  } else if (parts.length !== 3) return null;
  let year, day, hour, minute, second;
  try {
    [year, day, hour, minute, second] = [yy, dd, ...parts].map(pyInt);
  } catch {
    return null;
  }
  if (year < 100) year += year > 68 ? 1900 : 2000;
  let offset = null;
  tz = tz.toUpperCase();
  if (Object.hasOwn(ZONES, tz)) offset = ZONES[tz];
  else {
    try {
      offset = pyInt(tz);
    } catch {
      offset = null;
    }
    if (offset === 0 && tz.startsWith("-")) offset = null;
  }
  if (offset) {
    const sign = offset < 0 ? -1 : 1;
    const abs = Math.abs(offset);
    offset = sign * (Math.floor(abs / 100) * 3600 + (abs % 100) * 60);
  }
  // datetime(...) raises ValueError out of range
  const monthDays = [31, (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28, 31, 30, 31, 30, 31,
    31, 30, 31, 30, 31];
  if (year < 1 || year > 9999 || day < 1 || day > monthDays[month - 1] || hour < 0 || hour > 23 || minute < 0
      || minute > 59 || second < 0 || second > 59) return null;
  if (offset !== null && Math.abs(offset) >= 86400) return null;
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, 0);
  return date.getTime() / 1000 - (offset || 0);
}

// -- conditional and range requests (otapub/shim.py) ---------------------------------------------
const RANGE = /^bytes=(\d*)-(\d*)$/;

/** A single byte range → [start, end]; "unsatisfiable"; null to ignore it (serve 200). */
export function parseRange(spec, size) {
  const match = RANGE.exec(pyStrip(spec));
  if (!match || (!match[1] && !match[2])) return null;
  if (!match[1]) {
    const count = Number(match[2]);
    if (count === 0 || size === 0) return "unsatisfiable";
    return [Math.max(0, size - count), size - 1];
  }
  const start = Number(match[1]);
  if (start >= size) return "unsatisfiable";
  const end = match[2] ? Number(match[2]) : size - 1;
  if (end < start) return null;
  return [start, Math.min(end, size - 1)];
}

/** The shim's _not_modified: If-None-Match wins over If-Modified-Since. */
export function notModified(headers, etag, mtimeSeconds) {
  const tags = headers.get("If-None-Match");
  if (tags !== null) {
    return pyStrip(tags) === "*" || tags.split(",").map((t) => pyStrip(t).replace(/^W\//, "")).includes(etag);
  }
  const since = headers.get("If-Modified-Since");
  if (since) {
    const parsed = parseHttpDate(since);
    return parsed !== null && Math.floor(mtimeSeconds) <= parsed;
  }
  return false;
}

/** The shim's _if_range_ok. */
export function ifRangeOk(headers, etag) {
  const condition = headers.get("If-Range");
  return condition === null || pyStrip(condition) === etag;
}

// -- update clients (otapub/clients.py, tokens.py basic_auth_token) ---------------------------------
// Arduino HTTPUpdate (arduino-esp32 libraries/HTTPUpdate/src/HTTPUpdate.cpp) and ESP8266httpUpdate
// (esp8266/Arduino libraries/ESP8266httpUpdate/src/ESP8266httpUpdate.cpp) send x-ESP32-* / x-ESP8266-*
// headers; tests/vectors/httpupdate.json holds this port to the Python decisions.

export const HTTPUPDATE = "httpupdate";
export const DEFAULT_CLIENTS = ["seed"];
const PLATFORMS = ["ESP32", "ESP8266"];
const MODES = ["sketch", "spiffs", "version"];
const DIGITS = /^[0-9]{1,12}$/;
const MD5_HEX = /^[0-9A-Fa-f]{32}$/;
const MAX_HEADER = 128;

/** The x-<platform>-* headers of a request; `header(name)` gives a value or null. */
export function httpUpdateRequest(header) {
  for (const platform of PLATFORMS) {
    const mac = header(`x-${platform}-STA-MAC`);
    if (mac !== null && mac !== undefined) {
      const get = (name) => {
        const value = header(`x-${platform}-${name}`);
        return value === null || value === undefined ? null : pySlice(pyStrip(value), MAX_HEADER);
      };
      return { platform, mac: pySlice(pyStrip(mac), MAX_HEADER), version: get("version"),
        sketchMd5: get("sketch-md5"), freeSpace: get("free-space"), mode: get("mode") };
    }
  }
  return { platform: null, mac: null, version: null, sketchMd5: null, freeSpace: null, mode: null };
}

function answerOf(status, decision, error = null, mac = null, send = null) {
  return { status, decision, error, mac12: mac, send };
}

/** The request's own mistakes (400) before any file is read; null when it is well formed. */
export function httpUpdateCheck(request) {
  const p = request.platform;
  if (p === null) return answerOf(400, "bad_request", "Missing x-ESP32-STA-MAC (or x-ESP8266-STA-MAC) header");
  let mac;
  try {
    mac = mac12(request.mac || "");
  } catch {
    return answerOf(400, "bad_request", `Invalid MAC address format in x-${p}-STA-MAC`);
  }
  const mode = request.mode || "sketch";
  if (!MODES.includes(mode)) {
    return answerOf(400, "bad_request", `Unsupported x-${p}-mode (known: ${MODES.join(", ")})`, mac);
  }
  if (request.version !== null && request.version !== "") {
    try {
      parseVersion(request.version);
    } catch {
      return answerOf(400, "bad_request", `Invalid version format in x-${p}-version`, mac);
    }
  } else if (mode === "sketch" && !(request.sketchMd5 && MD5_HEX.test(request.sketchMd5))) {
    return answerOf(400, "bad_request",
      `Send x-${p}-version (httpUpdate.update's currentVersion) or x-${p}-sketch-md5`, mac);
  }
  if (request.freeSpace !== null && !DIGITS.test(request.freeSpace)) {
    return answerOf(400, "bad_request", `Invalid x-${p}-free-space`, mac);
  }
  return null;
}

/** What an authenticated, well-formed request gets from the device's answer (clients.py httpupdate_decision). */
export function httpUpdateDecision(request, answer) {
  const mac = mac12(request.mac || "");
  const clients = answer.clients || DEFAULT_CLIENTS;
  if (!clients.includes(HTTPUPDATE)) {
    return answerOf(403, "client_not_declared", "Device is not declared for client httpupdate (fleet YAML `client:`)",
      mac);
  }
  const mode = request.mode || "sketch";
  const target = answer.firmware_version ?? null;
  if (mode === "spiffs") return answerOf(304, "no_target", null, mac);
  if (!target) {
    return mode === "version" ? answerOf(200, "no_target", null, mac, "version") : answerOf(304, "no_target", null, mac);
  }
  let newer;
  if (request.version) {
    const comparison = compareVersions(parseVersion(target), parseVersion(request.version));
    newer = comparison > 0 || (answer.allow_downgrade === true && comparison !== 0);
  } else if (request.sketchMd5) {
    newer = request.sketchMd5.toLowerCase() !== answer.md5;
  } else {
    newer = false;
  }
  const decision = newer ? "update_offered" : "up_to_date";
  if (mode === "version") return answerOf(200, decision, null, mac, "version");
  if (!newer) return answerOf(304, decision, null, mac);
  const size = answer.size;
  if (request.freeSpace !== null && Number.isInteger(size) && size > Number(request.freeSpace)) {
    return answerOf(409, "no_space", `Firmware ${target} is ${size} bytes, more than the ${Number(request.freeSpace)} `
      + `bytes of free space the device reports (x-${request.platform}-free-space)`, mac);
  }
  return answerOf(200, decision, null, mac, "image");
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** The password of an `Authorization: Basic` header (tokens.py basic_auth_token), or null. */
export function basicAuthToken(header) {
  if (header === null || header === undefined) return null;
  const text = pyStrip(header);
  const at = text.indexOf(" ");
  const scheme = at < 0 ? text : text.slice(0, at);
  const value = at < 0 ? "" : pyStrip(text.slice(at + 1));
  if (scheme.toLowerCase() !== "basic" || value.length > 512) return null;
  if (!B64.test(value) || value.length % 4 !== 0) return null;
  let decoded;
  try {
    const bytes = Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
    decoded = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
  const colon = decoded.indexOf(":");
  return colon < 0 ? null : decoded.slice(colon + 1);
}

const SITE_FIRMWARE = /\/(f\/([0-9a-f]{64})\/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99})$/;

/** The site path of the answer's firmware, or null for a `url:` release (clients.py site_firmware). */
export function siteFirmware(answer) {
  const url = answer.firmware_url;
  if (typeof url !== "string") return null;
  const match = SITE_FIRMWARE.exec(url);
  if (match === null || match[2] !== answer.sha256) return null;
  return match[1];
}

/** The target version a manifest names, for the check-in log (clients.py manifest_target): null without one. */
export function manifestTarget(client, data) {
  let doc;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { ignoreBOM: true }).decode(data));
  } catch {
    return null;
  }
  const isObject = doc !== null && typeof doc === "object" && !Array.isArray(doc);
  const version = isObject ? doc[client === "esp32fota" ? "firmware_version" : "version"] : null;
  return typeof version === "string" && version ? version : null;
}
