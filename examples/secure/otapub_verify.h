/*
 * Verify an otapub signed answer on the device, with libsodium (Ed25519).
 *
 * A signed answer (docs/security.md, "Signed answers") is canonical JSON with the signature
 * member appended last:
 *
 *   {"checksum":"…",…,"expires":"2026-01-08T00:00:00Z",…,"manifest_version":7,…,
 *    "signature":{"keyid":"<16 hex>","sig":"<128 hex>"}}
 *
 * The signed bytes are the file cut at the last `,"signature":` with a `}` appended, so no
 * JSON canonicaliser is needed. Before acting on an answer a device checks, in this order:
 * the signature by a key it trusts (pinned in its firmware, never fetched from the host),
 * that `mac` is its own MAC, that `expires` is in the future (needs SNTP time), and that
 * `manifest_version` is not below the highest one it has accepted (kept in NVS).
 * otapub_verify_answer() does all four; afterwards, read the fields you need (firmware_url,
 * sha256, size, secure_version, firmware_version) from the verified answer with your JSON
 * parser or otapub_json_field(), and check the image's SHA-256 after download.
 *
 * ESP-IDF: add the `espressif/libsodium` component. With Monocypher instead, use
 * crypto_ed25519_check() from monocypher-ed25519.h (plain crypto_eddsa_check() uses
 * BLAKE2b, not SHA-512, and rejects Ed25519 signatures).
 *
 * Reference implementation: otapub/signing.py; tested by tests/test_c_security.py.
 */
#ifndef OTAPUB_VERIFY_H
#define OTAPUB_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OTAPUB_KEYID_LEN 16
#define OTAPUB_PUBLIC_KEY_SIZE 32

typedef struct {
    char keyid[OTAPUB_KEYID_LEN + 1];             /* 16 lower-case hex digits, as in keys.json */
    uint8_t public_key[OTAPUB_PUBLIC_KEY_SIZE];   /* raw Ed25519 public key */
} otapub_trusted_key;

enum {
    OTAPUB_VERIFY_OK = 0,
    OTAPUB_VERIFY_FORMAT = -1,      /* not a signed answer, or a field is malformed */
    OTAPUB_VERIFY_UNKNOWN_KEY = -2, /* signed by a key the device does not trust */
    OTAPUB_VERIFY_SIGNATURE = -3,   /* altered, or not signed by that key */
    OTAPUB_VERIFY_WRONG_MAC = -4,   /* a genuine answer, for another device */
    OTAPUB_VERIFY_EXPIRED = -5,     /* stale: possibly a freeze attack */
    OTAPUB_VERIFY_ROLLBACK = -6     /* manifest_version below one already accepted: a replay */
};

/*
 * Verify `answer` (len bytes, not necessarily NUL-terminated). The buffer is briefly modified
 * (one byte) and restored. `mac` is "AA:BB:CC:DD:EE:FF" (upper case), `now_utc` is
 * "YYYY-MM-DDTHH:MM:SSZ". On success *version (if not NULL) gets the answer's manifest_version.
 * Call sodium_init() once before.
 */
int otapub_verify_answer(char *answer, size_t len, const otapub_trusted_key *keys, size_t key_count,
                         const char *mac, const char *now_utc, uint64_t min_version, uint64_t *version);

/*
 * The raw value of top-level member `key` of a JSON object (a string keeps its quotes), or
 * NULL; *value_len gets its length. Enough for the canonical answers otapub writes.
 */
const char *otapub_json_field(const char *json, size_t len, const char *key, size_t *value_len);

#ifdef __cplusplus
}
#endif

#endif /* OTAPUB_VERIFY_H */
