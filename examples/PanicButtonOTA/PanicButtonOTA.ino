/*
  PanicButtonOTA: minimal over-the-air updates from otapub for a new ESP32 device.

  Speaks the seed's device protocol unchanged (see examples/README.md):
    GET <OTA_BASE>/api/firmware?device_id=...&hardware=...&version=...&mac=...
    X-Device-Auth: <token>
  and, when the answer says so, downloads firmware_url, verifies its MD5 with
  Update.setMD5() and restarts into it. Checks once shortly after boot, then
  every CHECK_INTERVAL_MS.

  Needs: Arduino-ESP32 core 2.x or 3.x, ArduinoJson 7, and a partition scheme
  with two OTA app partitions (e.g. the default "4MB with spiffs" or
  "Minimal SPIFFS"; not "Huge APP", which has no room for an update).
*/
#include <WiFi.h>
#include <WiFiClientSecure.h>
#include <HTTPClient.h>
#include <Update.h>
#include <ArduinoJson.h>

// ---- configuration ----------------------------------------------------------------
static const char *WIFI_SSID = "your-ssid";
static const char *WIFI_PASSWORD = "your-wifi-password";
static const char *OTA_BASE = "https://ota.example.com";      // the shim, no trailing slash
static const char *SHARED_SECRET = "your-device-secret-key";  // ASCII only (see README)
static const char *FIRMWARE_VERSION = "1.3.7";                // dotted numbers, bump per build
static const char *HARDWARE = "FireBeetle 2 ESP32-C6";        // free text, as in the fleet YAML
static const uint32_t CHECK_INTERVAL_MS = 24UL * 60UL * 60UL * 1000UL;
static const uint32_t FIRST_CHECK_DELAY_MS = 10UL * 1000UL;

// Token scheme, must match the fleet's: 0 = djb2-5381 ("%08X", the default for new
// devices), 1 = djb2-0 (String(hash, HEX), what the seed's PanicButton.ino sends).
#define OTAPUB_TOKEN_DJB2_0 0

// Root CA certificate(s), PEM, of the shim's host AND of the host serving firmware_url
// (a static site or CDN, often a different CA): paste both, one after the other.
static const char *CA_CERT = R"PEM(
-----BEGIN CERTIFICATE-----
...paste the root CA of your OTA host here...
-----END CERTIFICATE-----
)PEM";
// -------------------------------------------------------------------------------------

static uint32_t lastCheckMs = 0;
static bool checkedOnce = false;

// Same algorithm as examples/token/otapub_token.c, which is tested against
// tests/vectors/tokens.json and otapub/tokens.py. The uint8_t cast keeps bytes >= 0x80
// unsigned on every compiler (plain char already is on ESP32's Xtensa and RISC-V GCC).
static String deviceToken(const String &mac12) {
  uint32_t hash = OTAPUB_TOKEN_DJB2_0 ? 0u : 5381u;
  const String input = mac12 + SHARED_SECRET;
  const char *p = input.c_str();
  for (size_t i = 0; i < input.length(); i++) {
    hash = hash * 33u + (uint8_t)p[i];
  }
  char out[9];
#if OTAPUB_TOKEN_DJB2_0
  snprintf(out, sizeof out, "%lx", (unsigned long)hash);  // lower case, no zero padding
#else
  snprintf(out, sizeof out, "%08lX", (unsigned long)hash);
#endif
  return String(out);
}

// application/x-www-form-urlencoded, like the seed firmware: space -> '+', RFC 3986
// unreserved characters as they are, every other byte as %XX.
static String formEncode(const String &text) {
  static const char HEX_DIGITS[] = "0123456789ABCDEF";
  String out;
  out.reserve(text.length() * 3);
  const char *p = text.c_str();
  for (size_t i = 0; i < text.length(); i++) {
    const uint8_t c = (uint8_t)p[i];
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
        c == '-' || c == '_' || c == '.' || c == '~') {
      out += (char)c;
    } else if (c == ' ') {
      out += '+';
    } else {
      out += '%';
      out += HEX_DIGITS[c >> 4];
      out += HEX_DIGITS[c & 0x0F];
    }
  }
  return out;
}

static void connectWiFi() {
  if (WiFi.status() == WL_CONNECTED) {
    return;
  }
  Serial.printf("[wifi] connecting to %s", WIFI_SSID);
  WiFi.mode(WIFI_STA);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  for (int i = 0; i < 60 && WiFi.status() != WL_CONNECTED; i++) {
    delay(500);
    Serial.print('.');
  }
  Serial.println(WiFi.status() == WL_CONNECTED ? " connected" : " failed");
}

// Download url into the other OTA partition; restarts on success, returns on failure.
static void installFirmware(const String &url, const String &md5) {
  WiFiClientSecure client;
  client.setCACert(CA_CERT);
  HTTPClient http;
  http.setFollowRedirects(HTTPC_STRICT_FOLLOW_REDIRECTS);  // e.g. release asset URLs
  if (!http.begin(client, url)) {
    Serial.println("[ota] bad firmware_url");
    return;
  }
  const int code = http.GET();
  const int size = http.getSize();  // Content-Length; -1 when the server sent none
  if (code != HTTP_CODE_OK || size <= 0) {
    Serial.printf("[ota] download failed: HTTP %d, Content-Length %d\n", code, size);
    http.end();
    return;
  }
  if (!Update.begin((size_t)size)) {  // checks that the image fits the OTA partition
    Update.printError(Serial);
    http.end();
    return;
  }
  // After begin(), which clears any MD5 set earlier; end() then rejects a mismatch.
  if (!Update.setMD5(md5.c_str())) {
    Serial.println("[ota] checksum is not 32 hex digits");
    Update.abort();
    http.end();
    return;
  }
  Serial.printf("[ota] writing %d bytes\n", size);
  const size_t written = Update.writeStream(http.getStream());
  if (written != (size_t)size || !Update.end()) {  // end(): MD5, image check, boot slot
    Serial.printf("[ota] update failed after %u of %d bytes: ", (unsigned)written, size);
    Update.printError(Serial);
    Update.abort();
    http.end();
    return;
  }
  http.end();
  Serial.println("[ota] update installed, restarting");
  delay(500);
  ESP.restart();
}

static void checkForUpdate() {
  if (WiFi.status() != WL_CONNECTED) {
    return;
  }
  const String mac = WiFi.macAddress();  // "AA:BB:CC:DD:EE:FF"
  String mac12 = mac;
  mac12.replace(":", "");
  mac12.toUpperCase();
  const String deviceId = String("PanicAlarm_") + mac12.substring(8);  // + last two MAC bytes

  const String url = String(OTA_BASE) + "/api/firmware?device_id=" + formEncode(deviceId) +
                     "&hardware=" + formEncode(HARDWARE) +
                     "&version=" + formEncode(FIRMWARE_VERSION) + "&mac=" + formEncode(mac);

  WiFiClientSecure client;
  client.setCACert(CA_CERT);
  HTTPClient http;
  if (!http.begin(client, url)) {
    Serial.println("[ota] bad OTA_BASE");
    return;
  }
  http.addHeader("X-Device-Auth", deviceToken(mac12));
  const int code = http.GET();
  if (code != HTTP_CODE_OK) {
    // 400 {"error": ...}: bad parameters; 401: token rejected (wrong secret or scheme,
    // or device not in the fleet); < 0: no connection / TLS failure.
    Serial.printf("[ota] check failed: %d %s\n", code,
                  code < 0 ? HTTPClient::errorToString(code).c_str() : http.getString().c_str());
    http.end();
    return;
  }
  const String body = http.getString();
  http.end();

  JsonDocument doc;
  const DeserializationError error = deserializeJson(doc, body);
  if (error) {
    Serial.printf("[ota] bad answer: %s\n", error.c_str());
    return;
  }
  // The server compares versions; the device trusts update_available.
  if (!(doc["update_available"] | false)) {
    Serial.printf("[ota] %s is up to date\n", FIRMWARE_VERSION);
    return;
  }
  const String newVersion = doc["firmware_version"] | "?";
  const String firmwareUrl = doc["firmware_url"] | "";
  const String checksum = doc["checksum"] | "";
  if (firmwareUrl.length() == 0 || checksum.length() != 32) {
    Serial.println("[ota] answer lacks firmware_url or checksum");
    return;
  }
  Serial.printf("[ota] update %s -> %s\n", FIRMWARE_VERSION, newVersion.c_str());
  installFirmware(firmwareUrl, checksum);
}

void setup() {
  Serial.begin(115200);
  Serial.printf("\nPanicButtonOTA %s on %s\n", FIRMWARE_VERSION, HARDWARE);
  connectWiFi();
  lastCheckMs = millis();
}

void loop() {
  const uint32_t now = millis();
  // Unsigned subtraction survives millis() wrapping after ~49 days.
  const uint32_t due = checkedOnce ? CHECK_INTERVAL_MS : FIRST_CHECK_DELAY_MS;
  if (now - lastCheckMs >= due) {
    lastCheckMs = now;
    checkedOnce = true;
    connectWiFi();
    checkForUpdate();
  }
  delay(100);
}
