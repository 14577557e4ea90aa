/*
 * otapub hmac-sha256 device tokens, with mbedTLS (part of ESP-IDF and Arduino-ESP32).
 *
 *   device key = HMAC-SHA256(key = fleet secret (UTF-8 bytes), message = MAC12)      32 bytes
 *   token      = HMAC-SHA256(key = device key, message = "otapub-token:" + MAC12),
 *                first 16 bytes, as 32 upper-case hex digits
 *
 * MAC12 is the station MAC without separators, upper case ("AABBCCDDEEFF").
 * A device holds only its own key (flashed into NVS by `otapub provision MAC`) and sends the
 * token in X-Device-Auth; the fleet secret stays on the build machine. A leaked key or token
 * exposes that one device, unlike djb2 (docs/security.md).
 *
 * Reference implementation: otapub/tokens.py; vectors: tests/vectors/hmac_tokens.json
 * (checked against this file by tests/test_c_security.py).
 */
#ifndef OTAPUB_HMAC_TOKEN_H
#define OTAPUB_HMAC_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OTAPUB_DEVICE_KEY_SIZE 32
#define OTAPUB_HMAC_TOKEN_SIZE 33 /* 32 hex digits + NUL */

/*
 * The token of the device with MAC12 `mac12` (12 upper-case hex digits, NUL-terminated) from
 * its own key. Returns 0, or -1 when mbedTLS fails (out is then "").
 */
int otapub_hmac_token(const uint8_t key[OTAPUB_DEVICE_KEY_SIZE], const char *mac12,
                      char out[OTAPUB_HMAC_TOKEN_SIZE]);

/*
 * A device's key from the fleet secret. For provisioning tools and for a one-off transitional
 * firmware that migrates djb2 devices over the air (docs/security.md, "Migration"): a device
 * built for hmac-sha256 from the start never holds the fleet secret. Returns 0 or -1.
 */
int otapub_device_key(const uint8_t *secret, size_t secret_len, const char *mac12,
                      uint8_t key[OTAPUB_DEVICE_KEY_SIZE]);

#ifdef __cplusplus
}
#endif

#endif /* OTAPUB_HMAC_TOKEN_H */
