/*
 * otapub device tokens: portable C99, no Arduino dependency.
 *
 * The value a device sends in the X-Device-Auth header of
 * GET /api/firmware. Two variants exist in the field (design.md §2):
 *
 *   djb2-5381  djb2 from 5381 over MAC12 + secret, sent as "%08X"
 *              (the seed README's snippet)
 *   djb2-0     djb2 from 0 over MAC12 + secret, sent like Arduino's
 *              String(hash, HEX): lower case, NOT zero-padded
 *              (the seed's real server and firmware)
 *
 * MAC12 is the station MAC without separators, upper case ("AABBCCDDEEFF").
 * Every byte of MAC12 + secret is added as an unsigned value (0..255); see
 * otapub_token.c and examples/README.md for why that matters for secrets
 * with bytes >= 0x80. Use ASCII secrets.
 *
 * Reference implementation: otapub/tokens.py; test vectors:
 * tests/vectors/tokens.json (checked against this file by
 * tests/test_c_tokens.py).
 */
#ifndef OTAPUB_TOKEN_H
#define OTAPUB_TOKEN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Buffer sizes, including the terminating NUL. */
#define OTAPUB_MAC12_SIZE 13
#define OTAPUB_TOKEN_SIZE 9

/*
 * djb2 over the bytes of mac12 followed by the bytes of secret, starting
 * from seed (5381 or 0), 32-bit wrap-around. Both strings are
 * NUL-terminated; a NULL secret is treated as "".
 */
uint32_t otapub_djb2(uint32_t seed, const char *mac12, const char *secret);

/* djb2-5381: always 8 upper-case hex digits, e.g. "0012ABCD". */
void otapub_token_djb2_5381(const char *mac12, const char *secret, char out[OTAPUB_TOKEN_SIZE]);

/* djb2-0: lower-case hex without leading zeros, 1 to 8 digits, e.g. "12abcd". */
void otapub_token_djb2_0(const char *mac12, const char *secret, char out[OTAPUB_TOKEN_SIZE]);

/*
 * Turn a MAC spelled "AA:BB:CC:DD:EE:FF", "aa-bb-cc-dd-ee-ff" or
 * "aabbccddeeff" into MAC12 upper case ("AABBCCDDEEFF").
 * Returns 0 on success, -1 (and out = "") for anything else: 12 hex digits,
 * or six hex pairs joined by one separator (':' or '-') used throughout.
 * ESP32 Arduino's WiFi.macAddress() returns the colon form.
 */
int otapub_mac12(const char *mac, char out[OTAPUB_MAC12_SIZE]);

#ifdef __cplusplus
}
#endif

#endif /* OTAPUB_TOKEN_H */
