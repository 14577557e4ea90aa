/*
 * Test driver for examples/secure/otapub_verify.c (used by tests/test_c_security.py).
 *
 *   verify_answer <answer file> <MAC> <now, YYYY-MM-DDTHH:MM:SSZ> <min version> <keyid:pubhex>...
 *
 * prints "<rc> <manifest_version>" and one line per field the device then reads
 * ("firmware_url", "sha256", "secure_version"); exits 0 whatever the verdict.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "otapub_verify.h"

#define MAX_ANSWER 65536
#define MAX_KEYS 8

int main(int argc, char **argv)
{
    static char answer[MAX_ANSWER];
    otapub_trusted_key keys[MAX_KEYS];
    static const char *fields[] = {"firmware_url", "sha256", "secure_version"};
    size_t key_count = 0;
    size_t len;
    uint64_t version = 0;
    FILE *file;
    int rc;
    int i;

    if (argc < 6 || sodium_init() < 0) {
        return 2;
    }
    file = fopen(argv[1], "rb");
    if (file == NULL) {
        return 2;
    }
    len = fread(answer, 1, sizeof(answer), file);
    fclose(file);
    for (i = 5; i < argc && key_count < MAX_KEYS; i++) {
        const char *colon = strchr(argv[i], ':');
        if (colon == NULL || colon - argv[i] != OTAPUB_KEYID_LEN) {
            return 2;
        }
        memcpy(keys[key_count].keyid, argv[i], OTAPUB_KEYID_LEN);
        keys[key_count].keyid[OTAPUB_KEYID_LEN] = '\0';
        if (sodium_hex2bin(keys[key_count].public_key, OTAPUB_PUBLIC_KEY_SIZE, colon + 1, strlen(colon + 1),
                           NULL, NULL, NULL) != 0) {
            return 2;
        }
        key_count++;
    }
    rc = otapub_verify_answer(answer, len, keys, key_count, argv[2], argv[3], strtoull(argv[4], NULL, 10),
                              &version);
    printf("%d %llu\n", rc, (unsigned long long)version);
    if (rc == OTAPUB_VERIFY_OK) {
        for (i = 0; i < 3; i++) {
            size_t n = 0;
            const char *value = otapub_json_field(answer, len, fields[i], &n);
            printf("%s %.*s\n", fields[i], (int)(value ? n : 1), value ? value : "-");
        }
    }
    return 0;
}
