/*
  HTTPUpdateBasic: Arduino-ESP32's HTTPUpdate against otapub, with HTTP Basic authentication.

  The fleet YAML declares the device with `client: httpupdate`. The shim decides: it answers
  304 when nothing is newer, else the image itself (Content-Length, x-MD5), which HTTPUpdate
  flashes and restarts into (docs/clients.md). Sent as HTTPUpdate.cpp sends it: HTTP/1.0 with
  x-ESP32-STA-MAC, x-ESP32-free-space, x-ESP32-sketch-md5, x-ESP32-mode, x-ESP32-version...

  OTAPUB_TOKEN: what `otapub token <this device's MAC>` prints (`otapub token MAC --urls`
  prints the URL too). It is the Basic password; the user name is not checked.
  Other ways otapub accepts the token: in the path (OTA_URL "https://…/api/httpupdate/<TOKEN>",
  `--urls` prints it), or an X-Device-Auth header added in the request callback:
      httpUpdate.update(client, OTA_URL, FIRMWARE_VERSION,
                        [](HTTPClient *http) { http->addHeader("X-Device-Auth", OTAPUB_TOKEN); });

  Needs: Arduino-ESP32 core 3.x (HTTPUpdate::setAuthorization) and two OTA app partitions.
  ESP8266: include ESP8266httpUpdate.h and use ESPhttpUpdate the same way (x-ESP8266-* headers).
*/
#include <WiFi.h>
#include <WiFiClientSecure.h>
#include <HTTPUpdate.h>

static const char *WIFI_SSID = "your-ssid";
static const char *WIFI_PASSWORD = "your-wifi-password";
static const char *OTA_URL = "https://ota.example.com/api/httpupdate";  // the shim (otapub serve or the Worker)
static const char *OTAPUB_TOKEN = "C4BDD8C4";                          // `otapub token AA:BB:CC:DD:EE:FF`
static const char *FIRMWARE_VERSION = "1.3.7";  // the release's `version:`, compared numerically by the shim
static const char *CA_CERT = R"PEM(
-----BEGIN CERTIFICATE-----
...paste the root CA of your OTA host here...
-----END CERTIFICATE-----
)PEM";

void setup() {
  Serial.begin(115200);
  WiFi.mode(WIFI_STA);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  while (WiFi.status() != WL_CONNECTED) delay(500);

  WiFiClientSecure client;
  client.setCACert(CA_CERT);
  httpUpdate.setAuthorization("otapub", OTAPUB_TOKEN);
  switch (httpUpdate.update(client, OTA_URL, FIRMWARE_VERSION)) {
    case HTTP_UPDATE_OK:  // not reached: it restarts into the new image
      break;
    case HTTP_UPDATE_NO_UPDATES:  // 304: nothing newer for this device
      Serial.println("up to date");
      break;
    case HTTP_UPDATE_FAILED:  // 401 token/MAC, 403 not `client: httpupdate`, 409 too little free space...
      Serial.printf("update failed (%d): %s\n", httpUpdate.getLastError(),
                    httpUpdate.getLastErrorString().c_str());
      break;
  }
}

void loop() {}
