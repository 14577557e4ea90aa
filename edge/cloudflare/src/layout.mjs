// The site as the edge stores it: the files `otapub build` wrote (design.md §4) plus one index
// written by stage.mjs / publish.mjs. Shared by the Worker and the node-side tools.

/** Firmware metadata the Worker cannot get from a static-assets binding: size and mtime. */
export const INDEX_KEY = "_otapub/index.json";
export const INDEX_FORMAT = 1;
export const RECORD_KEY = "build.json";
export const KEYS_KEY = "keys.json"; // public keys of signed answers (only when signing is on)

// The only files the shim can ever serve (the Python shim's route patterns, as site paths).
export const ANSWER_KEY = /^d\/[0-9A-F]{8,64}\/[0-9A-F]{12}\.json$/;
// Static manifests of the clients that compare versions themselves (otapub/clients.py MANIFESTS).
export const MANIFEST_KEY = /^d\/[0-9A-F]{8,64}\/[0-9A-F]{12}\/(?:esp32fota|esphome)\.json$/;
export const FIRMWARE_KEY = /^f\/[0-9a-f]{64}\/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$/;
export const TEMP_MARK = ".otapub-tmp-"; // otapub.fsutil.TMP_MARK: a build's file in progress

/** Whether a site path is one the shim serves (answers, manifests, firmware, the build record, keys). */
export function isServedKey(key) {
  if (key.includes(TEMP_MARK)) return false;
  return key === RECORD_KEY || key === KEYS_KEY || ANSWER_KEY.test(key) || MANIFEST_KEY.test(key)
    || FIRMWARE_KEY.test(key);
}

/**
 * The seed's /firmware/<name>: the newest firmware file with that name (by mtime; ties go to
 * the first key in sorted order), as the Python shim's _seed_firmware does.
 */
export function seedFirmware(index, name) {
  let best = null;
  let bestMtime = -1n;
  for (const key of Object.keys(index.firmware || {}).sort()) {
    if (key.slice(key.lastIndexOf("/") + 1) !== name) continue;
    const mtime = BigInt(index.firmware[key].mtime_ns);
    if (best === null || bestMtime < mtime) {
      best = key;
      bestMtime = mtime;
    }
  }
  return best;
}
