/* otapub hmac-sha256 device tokens with mbedTLS; see otapub_hmac_token.h. */
#include "otapub_hmac_token.h"

#include <string.h>

#include "mbedtls/md.h"

#define LABEL "otapub-token:"
#define MAC12_LEN 12

static int valid_mac12(const char *mac12)
{
    size_t i;
    for (i = 0; i < MAC12_LEN; i++) {
        char c = mac12[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'))) {
            return 0;
        }
    }
    return mac12[MAC12_LEN] == '\0';
}

static int hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t msg_len,
                       uint8_t out[32])
{
    const mbedtls_md_info_t *sha256 = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    if (sha256 == NULL) {
        return -1;
    }
    return mbedtls_md_hmac(sha256, key, key_len, msg, msg_len, out) == 0 ? 0 : -1;
}

int otapub_hmac_token(const uint8_t key[OTAPUB_DEVICE_KEY_SIZE], const char *mac12,
                      char out[OTAPUB_HMAC_TOKEN_SIZE])
{
    static const char digits[] = "0123456789ABCDEF";
    uint8_t msg[sizeof(LABEL) - 1 + MAC12_LEN];
    uint8_t tag[32];
    size_t i;

    out[0] = '\0';
    if (!valid_mac12(mac12)) {
        return -1;
    }
    memcpy(msg, LABEL, sizeof(LABEL) - 1);
    memcpy(msg + sizeof(LABEL) - 1, mac12, MAC12_LEN);
    if (hmac_sha256(key, OTAPUB_DEVICE_KEY_SIZE, msg, sizeof(msg), tag) != 0) {
        return -1;
    }
    for (i = 0; i < 16; i++) { /* the first 16 bytes: 128 bits */
        out[2 * i] = digits[tag[i] >> 4];
        out[2 * i + 1] = digits[tag[i] & 0x0F];
    }
    out[32] = '\0';
    memset(tag, 0, sizeof(tag));
    return 0;
}

int otapub_device_key(const uint8_t *secret, size_t secret_len, const char *mac12,
                      uint8_t key[OTAPUB_DEVICE_KEY_SIZE])
{
    if (!valid_mac12(mac12)) {
        return -1;
    }
    return hmac_sha256(secret, secret_len, (const uint8_t *)mac12, MAC12_LEN, key);
}
