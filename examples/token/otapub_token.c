/*
 * otapub device tokens: portable C99, no Arduino dependency.
 * See otapub_token.h for the contract and otapub/tokens.py for the reference.
 */
#include "otapub_token.h"

#include <stddef.h>

static const char HEX_UPPER[] = "0123456789ABCDEF";
static const char HEX_LOWER[] = "0123456789abcdef";

static uint32_t djb2_update(uint32_t hash, const char *text)
{
    const char *p;
    if (text == NULL) {
        return hash;
    }
    for (p = text; *p != '\0'; ++p) {
        /*
         * The cast is the point: plain `char` is signed on some compilers
         * (x86, AVR, MSVC), and a byte >= 0x80 would then be added as a
         * negative number. The seed firmware adds String::charAt(), a plain
         * char; that is unsigned on the ESP32 toolchains (Xtensa and RISC-V
         * ABIs both define char as unsigned), so reading every byte as
         * uint8_t matches both the seed devices and otapub/tokens.py on
         * every compiler. Secrets should still be ASCII (examples/README.md).
         */
        hash = hash * 33u + (uint32_t)(uint8_t)*p;
    }
    return hash;
}

uint32_t otapub_djb2(uint32_t seed, const char *mac12, const char *secret)
{
    /* uint32_t arithmetic wraps modulo 2^32, exactly like the device loop. */
    return djb2_update(djb2_update(seed, mac12), secret);
}

void otapub_token_djb2_5381(const char *mac12, const char *secret, char out[OTAPUB_TOKEN_SIZE])
{
    uint32_t hash = otapub_djb2(5381u, mac12, secret);
    int i;
    for (i = 7; i >= 0; --i) {
        out[i] = HEX_UPPER[hash & 0xFu];
        hash >>= 4;
    }
    out[8] = '\0';
}

void otapub_token_djb2_0(const char *mac12, const char *secret, char out[OTAPUB_TOKEN_SIZE])
{
    uint32_t hash = otapub_djb2(0u, mac12, secret);
    char digits[8];
    int n = 0;
    int i;
    /* Like String(hash, HEX): at least one digit ("0"), no leading zeros. */
    do {
        digits[n++] = HEX_LOWER[hash & 0xFu];
        hash >>= 4;
    } while (hash != 0u);
    for (i = 0; i < n; ++i) {
        out[i] = digits[n - 1 - i];
    }
    out[n] = '\0';
}

static int hex_upper(char c)
{
    if (c >= '0' && c <= '9') {
        return c;
    }
    if (c >= 'A' && c <= 'F') {
        return c;
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 'A';
    }
    return -1;
}

int otapub_mac12(const char *mac, char out[OTAPUB_MAC12_SIZE])
{
    /* "AABBCCDDEEFF" or six pairs joined by one separator, ':' or '-'. */
    size_t len = 0;
    size_t i;
    size_t n = 0;
    char sep = '\0';
    out[0] = '\0';
    if (mac == NULL) {
        return -1;
    }
    while (mac[len] != '\0' && len < 18) {
        ++len;
    }
    if (len == 17) {
        sep = mac[2];
        if (sep != ':' && sep != '-') {
            return -1;
        }
    } else if (len != 12) {
        return -1;
    }
    for (i = 0; i < len; ++i) {
        int c;
        if (len == 17 && i % 3 == 2) {
            if (mac[i] != sep) {
                out[0] = '\0';
                return -1;
            }
            continue;
        }
        c = hex_upper(mac[i]);
        if (c < 0) {
            out[0] = '\0';
            return -1;
        }
        out[n++] = (char)c;
    }
    out[12] = '\0';
    return 0;
}
