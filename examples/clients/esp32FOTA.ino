/*
  esp32FOTA against otapub: a static manifest at the device's token path.

  The fleet YAML declares the device with `client: esp32fota` and `firmware_type: panic-fota`
  (the same string as FIRMWARE_TYPE below); the build renders
      d/<TOKEN>/<MAC12>/esp32fota.json  ->  {"type": "panic-fota", "version": "X.Y.Z", "url": "https://…"}
  which any static host serves. esp32FOTA compares the version itself and installs only a newer
  one (docs/clients.md). base_url must be set in otapub's config (the url must be absolute).

  MANIFEST_URL: the esp32fota line of `otapub token <this device's MAC> --urls`.
  Needs: chrisjoyce911/esp32FOTA 0.2.x, ArduinoJson.
*/
#include <WiFi.h>
#include <esp32FOTA.hpp>

static const char *WIFI_SSID = "your-ssid";
static const char *WIFI_PASSWORD = "your-wifi-password";
static const char *FIRMWARE_TYPE = "panic-fota";  // fleet YAML `firmware_type:`
static const char *FIRMWARE_VERSION = "1.3.7";    // X.Y.Z: esp32FOTA reads three numbers
static const char *MANIFEST_URL =                 // `otapub token AA:BB:CC:DD:EE:FF --urls`
    "https://ota.example.com/d/C4BDD8C4/AABBCCDDEEFF/esp32fota.json";

static const char *ROOT_CA = R"PEM(
-----BEGIN CERTIFICATE-----
...paste the root CA of the host serving the site here...
-----END CERTIFICATE-----
)PEM";

esp32FOTA fota(FIRMWARE_TYPE, FIRMWARE_VERSION);  // validate = false: otapub does not prepend an RSA signature

void setup() {
  Serial.begin(115200);
  WiFi.mode(WIFI_STA);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  while (WiFi.status() != WL_CONNECTED) delay(500);
  fota.setManifestURL(MANIFEST_URL);
  fota.setRootCA(new CryptoMemAsset("Root CA", ROOT_CA, strlen(ROOT_CA) + 1));  // the static host's CA
}

void loop() {
  if (fota.execHTTPcheck()) {  // the manifest names a newer version for our type
    fota.execOTA();            // downloads "url", flashes, restarts
  }
  delay(24UL * 60UL * 60UL * 1000UL);
}
