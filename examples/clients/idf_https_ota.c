/*
 * ESP-IDF esp_https_ota against otapub (docs/clients.md), with partial downloads.
 *
 * The fleet YAML declares the device with `client: idf`. The device reads its answer
 * d/<TOKEN>/<MAC12>.json (the idf line of `otapub token <MAC> --urls`), compares firmware_version
 * with its own version itself, and hands firmware_url to esp_https_ota. Firmware is
 * content-addressed and immutable: HEAD, Range windows and resumption all see the same bytes.
 * X-Device-Auth is what `otapub token <MAC>` prints (or examples/secure/otapub_hmac_token.c
 * computes); the shim needs it for the answer, a static host ignores it.
 *
 * A sketch of the calls, not a complete app: Wi-Fi, cJSON parsing of the answer and the
 * version comparison are left out. ESP-IDF v5.x.
 */
#include <string.h>

#include "esp_crt_bundle.h"
#include "esp_http_client.h"
#include "esp_https_ota.h"
#include "esp_log.h"
#include "esp_system.h"

#define ANSWER_URL "https://ota.example.com/d/C4BDD8C4/AABBCCDDEEFF.json" /* `otapub token MAC --urls` */
#define OTAPUB_TOKEN "C4BDD8C4"                                          /* `otapub token MAC` */

static const char *TAG = "otapub-ota";

/* Every request esp_https_ota makes carries the token (harmless on /f/, required for the answer). */
static esp_err_t add_token(esp_http_client_handle_t client)
{
    return esp_http_client_set_header(client, "X-Device-Auth", OTAPUB_TOKEN);
}

/* firmware_url: read from the answer at ANSWER_URL (GET with the same X-Device-Auth header),
 * after comparing its firmware_version with esp_app_get_description()->version. */
esp_err_t otapub_update(const char *firmware_url)
{
    esp_http_client_config_t http = {
        .url = firmware_url,
        .crt_bundle_attach = esp_crt_bundle_attach,
        .keep_alive_enable = true,
    };
    esp_https_ota_config_t ota = {
        .http_config = &http,
        .http_client_init_cb = add_token,
        .partial_http_download = true,   /* HEAD, then Range: bytes=N-M windows (206) */
        .max_http_request_size = 16384,
    };
    esp_err_t err = esp_https_ota(&ota);
    if (err == ESP_OK) {
        ESP_LOGI(TAG, "update written, restarting");
        esp_restart();
    }
    ESP_LOGE(TAG, "OTA failed: %s", esp_err_to_name(err));
    return err;
}
