/*
 * Test driver for examples/secure/otapub_hmac_token.c (used by tests/test_c_security.py).
 *
 * stdin, one case per line:   <mac12> <secret as hex bytes, or "-" for empty>
 * stdout, one line per case:  <device key, 64 hex> <token from that key, 32 hex>
 *                             or "error" when a function fails
 */
#include <stdio.h>
#include <string.h>

#include "otapub_hmac_token.h"

#define MAX_SECRET 1024

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int main(void)
{
    char mac12[64];
    char hex[2 * MAX_SECRET + 2];
    uint8_t secret[MAX_SECRET];
    uint8_t key[OTAPUB_DEVICE_KEY_SIZE];
    char token[OTAPUB_HMAC_TOKEN_SIZE];

    while (scanf("%63s %2049s", mac12, hex) == 2) {
        size_t n = 0;
        size_t i;
        if (strcmp(hex, "-") != 0) {
            size_t len = strlen(hex);
            if (len % 2 != 0 || len / 2 > MAX_SECRET) {
                return 2;
            }
            for (i = 0; i < len; i += 2) {
                int hi = hex_value(hex[i]);
                int lo = hex_value(hex[i + 1]);
                if (hi < 0 || lo < 0) {
                    return 2;
                }
                secret[n++] = (uint8_t)(hi * 16 + lo);
            }
        }
        if (otapub_device_key(secret, n, mac12, key) != 0 || otapub_hmac_token(key, mac12, token) != 0) {
            printf("error\n");
            continue;
        }
        for (i = 0; i < sizeof(key); i++) {
            printf("%02x", key[i]);
        }
        printf(" %s\n", token);
    }
    return 0;
}
