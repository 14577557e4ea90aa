/*
 * Test driver for examples/token/otapub_token.c (used by tests/test_c_tokens.py).
 *
 * stdin, one case per line:   <mac> <secret as hex bytes, or "-" for empty>
 * stdout, one line per case:  <rc> <mac12> <djb2-5381> <djb2-0> <signed-5381> <signed-0>
 *
 * rc and mac12 come from otapub_mac12() ("-" when it fails; the tokens are then "-").
 * The signed-* columns replay the seed firmware's loop as it behaves where plain char
 * is signed (x86, AVR, MSVC): each byte is added as a signed char. They document the
 * caveat in examples/README.md and are not part of the token API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "otapub_token.h"

#define MAX_SECRET 4096
#define MAX_LINE (2 * MAX_SECRET + 64)

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

static int decode_hex(const char *hex, char *out, size_t size)
{
    size_t n = 0;
    if (strcmp(hex, "-") == 0) {
        out[0] = '\0';
        return 0;
    }
    while (hex[0] != '\0') {
        int hi = hex_value((unsigned char)hex[0]);
        int lo = hex[1] != '\0' ? hex_value((unsigned char)hex[1]) : -1;
        if (hi < 0 || lo < 0 || n + 1 >= size || (hi == 0 && lo == 0)) {
            return -1;
        }
        out[n++] = (char)(hi * 16 + lo);
        hex += 2;
    }
    out[n] = '\0';
    return 0;
}

static uint32_t signed_char_djb2(uint32_t hash, const char *text)
{
    const char *p;
    for (p = text; *p != '\0'; ++p) {
        /* int promotion of a negative signed char, then conversion to uint32_t. */
        hash = ((hash << 5) + hash) + (uint32_t)(int)(signed char)*p;
    }
    return hash;
}

int main(void)
{
    static char line[MAX_LINE];
    static char secret[MAX_SECRET];
    while (fgets(line, sizeof line, stdin) != NULL) {
        char mac12[OTAPUB_MAC12_SIZE];
        char tok5381[OTAPUB_TOKEN_SIZE];
        char tok0[OTAPUB_TOKEN_SIZE];
        char *mac = strtok(line, " \r\n");
        char *secret_hex = strtok(NULL, " \r\n");
        int rc;
        if (mac == NULL || secret_hex == NULL || decode_hex(secret_hex, secret, sizeof secret) != 0) {
            fprintf(stderr, "bad input line\n");
            return 2;
        }
        rc = otapub_mac12(mac, mac12);
        if (rc != 0) {
            printf("%d - - - - -\n", rc);
            continue;
        }
        otapub_token_djb2_5381(mac12, secret, tok5381);
        otapub_token_djb2_0(mac12, secret, tok0);
        printf("%d %s %s %s %08lX %lx\n", rc, mac12, tok5381, tok0,
               (unsigned long)signed_char_djb2(signed_char_djb2(5381u, mac12), secret),
               (unsigned long)signed_char_djb2(signed_char_djb2(0u, mac12), secret));
    }
    return 0;
}
