/* Verify otapub signed answers with libsodium; see otapub_verify.h. */
#include "otapub_verify.h"

#include <string.h>

#include <sodium.h>

#define MEMBER ",\"signature\":{\"keyid\":\""
#define MIDDLE "\",\"sig\":\""
#define TAIL "\"}}"
#define SIG_HEX_LEN 128
#define TIME_LEN 20 /* YYYY-MM-DDTHH:MM:SSZ */

static int is_lower_hex(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

/* The last occurrence of needle in haystack, or NULL. */
static const char *find_last(const char *haystack, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    size_t i;
    if (len < n) {
        return NULL;
    }
    for (i = len - n + 1; i-- > 0;) {
        if (memcmp(haystack + i, needle, n) == 0) {
            return haystack + i;
        }
    }
    return NULL;
}

const char *otapub_json_field(const char *json, size_t len, const char *key, size_t *value_len)
{
    size_t key_len = strlen(key);
    size_t i = 0;
    int depth = 0;

    while (i < len) {
        char c = json[i];
        if (c == '"') {
            size_t start = ++i;
            while (i < len && json[i] != '"') {
                i += (json[i] == '\\') ? 2 : 1;
            }
            if (i >= len) {
                return NULL;
            }
            /* A member name at the top level: "key": value */
            if (depth == 1 && i + 1 < len && json[i + 1] == ':' && i - start == key_len &&
                memcmp(json + start, key, key_len) == 0) {
                size_t v = i + 2;
                size_t end = v;
                int inner = 0;
                int in_string = 0;
                while (end < len) {
                    char d = json[end];
                    if (in_string) {
                        if (d == '\\') {
                            end++;
                        } else if (d == '"') {
                            in_string = 0;
                        }
                    } else if (d == '"') {
                        in_string = 1;
                    } else if (d == '{' || d == '[') {
                        inner++;
                    } else if (d == '}' || d == ']') {
                        if (inner == 0) {
                            break;
                        }
                        inner--;
                    } else if (d == ',' && inner == 0) {
                        break;
                    }
                    end++;
                }
                *value_len = end - v;
                return json + v;
            }
            i++;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        }
        i++;
    }
    return NULL;
}

static int parse_uint(const char *s, size_t n, uint64_t *out)
{
    uint64_t value = 0;
    size_t i;
    if (n == 0 || n > 19) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        value = value * 10 + (uint64_t)(s[i] - '0');
    }
    *out = value;
    return 0;
}

static int check_signature(char *answer, size_t len, const otapub_trusted_key *keys, size_t key_count,
                           size_t *signed_len)
{
    const size_t member_len = sizeof(MEMBER) - 1;
    const size_t middle_len = sizeof(MIDDLE) - 1;
    const size_t tail_len = sizeof(TAIL) - 1;
    const size_t total = member_len + OTAPUB_KEYID_LEN + middle_len + SIG_HEX_LEN + tail_len;
    const char *at;
    const char *keyid;
    const char *sig_hex;
    const otapub_trusted_key *key = NULL;
    unsigned char sig[crypto_sign_BYTES];
    size_t at_pos;
    size_t i;
    int ok;

    while (len > 0 && (answer[len - 1] == '\n' || answer[len - 1] == '\r' || answer[len - 1] == ' ')) {
        len--;
    }
    at = find_last(answer, len, ",\"signature\":");
    if (at == NULL || (size_t)(answer + len - at) != total || memcmp(at, MEMBER, member_len) != 0) {
        return OTAPUB_VERIFY_FORMAT;
    }
    keyid = at + member_len;
    sig_hex = keyid + OTAPUB_KEYID_LEN + middle_len;
    if (!is_lower_hex(keyid, OTAPUB_KEYID_LEN) || memcmp(keyid + OTAPUB_KEYID_LEN, MIDDLE, middle_len) != 0 ||
        !is_lower_hex(sig_hex, SIG_HEX_LEN) || memcmp(sig_hex + SIG_HEX_LEN, TAIL, tail_len) != 0) {
        return OTAPUB_VERIFY_FORMAT;
    }
    for (i = 0; i < key_count; i++) {
        if (memcmp(keys[i].keyid, keyid, OTAPUB_KEYID_LEN) == 0) {
            key = &keys[i];
            break;
        }
    }
    if (key == NULL) {
        return OTAPUB_VERIFY_UNKNOWN_KEY;
    }
    if (sodium_hex2bin(sig, sizeof(sig), sig_hex, SIG_HEX_LEN, NULL, NULL, NULL) != 0) {
        return OTAPUB_VERIFY_FORMAT;
    }
    /* The signed bytes: everything before the signature member, then "}". */
    at_pos = (size_t)(at - answer);
    answer[at_pos] = '}';
    ok = crypto_sign_verify_detached(sig, (const unsigned char *)answer, at_pos + 1, key->public_key) == 0;
    answer[at_pos] = ',';
    if (!ok) {
        return OTAPUB_VERIFY_SIGNATURE;
    }
    *signed_len = at_pos + 1;
    return OTAPUB_VERIFY_OK;
}

int otapub_verify_answer(char *answer, size_t len, const otapub_trusted_key *keys, size_t key_count,
                         const char *mac, const char *now_utc, uint64_t min_version, uint64_t *version)
{
    size_t signed_len = 0;
    size_t n;
    const char *value;
    uint64_t found;
    int rc = check_signature(answer, len, keys, key_count, &signed_len);

    if (rc != OTAPUB_VERIFY_OK) {
        return rc;
    }
    /* Only the signed part is read from here on (it ends with the ',' restored above: stop before). */
    signed_len--;
    value = otapub_json_field(answer, signed_len, "mac", &n);
    if (value == NULL || n != strlen(mac) + 2 || value[0] != '"' || memcmp(value + 1, mac, n - 2) != 0) {
        return value == NULL ? OTAPUB_VERIFY_FORMAT : OTAPUB_VERIFY_WRONG_MAC;
    }
    value = otapub_json_field(answer, signed_len, "expires", &n);
    if (value == NULL || n != TIME_LEN + 2 || strlen(now_utc) != TIME_LEN) {
        return OTAPUB_VERIFY_FORMAT;
    }
    /* Fixed-width UTC times compare correctly as strings. */
    if (memcmp(now_utc, value + 1, TIME_LEN) >= 0) {
        return OTAPUB_VERIFY_EXPIRED;
    }
    value = otapub_json_field(answer, signed_len, "manifest_version", &n);
    if (value == NULL || parse_uint(value, n, &found) != 0) {
        return OTAPUB_VERIFY_FORMAT;
    }
    if (found < min_version) {
        return OTAPUB_VERIFY_ROLLBACK;
    }
    if (version != NULL) {
        *version = found;
    }
    return OTAPUB_VERIFY_OK;
}
