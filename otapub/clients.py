"""The update clients otapub answers, and what each one is sent (docs/clients.md).

One fleet, several wire formats. Each device declares the clients it speaks (fleet YAML
``client:``); targets, rollouts, hardware and chip checks are decided once, before any of this.

- ``seed``: the seed's ``GET /api/firmware`` (otapub.shim); the shim decides.
- ``idf``: ESP-IDF ``esp_https_ota``: the device reads its answer ``d/<TOKEN>/<MAC12>.json`` and
  downloads ``firmware_url`` with Range requests (otapub.shim serves both, so does a static host).
- ``httpupdate``: Arduino ``HTTPUpdate`` (ESP32) and ``ESP8266httpUpdate``: ``GET /api/httpupdate``
  with ``x-ESP32-*`` / ``x-ESP8266-*`` headers; the shim decides (``httpupdate_decision``) and
  answers 304 or the image itself.
- ``esp32fota`` and ``esphome``: the device compares versions itself, so its answer is a static
  manifest the build renders at ``d/<TOKEN>/<MAC12>/<client>.json``: any static host serves it.

Wire formats follow the clients' own source (quoted where used):
arduino-esp32 libraries/HTTPUpdate/src/HTTPUpdate.cpp (HTTPUpdate::handleUpdate),
esp8266/Arduino libraries/ESP8266httpUpdate/src/ESP8266httpUpdate.cpp (handleUpdate,
getAvailableVersion), chrisjoyce911/esp32FOTA src/esp32FOTA.cpp (checkJSONManifest, execHTTPcheck),
esphome/esphome esphome/components/http_request/update/http_request_update.cpp (update()),
espressif/esp-idf components/esp_https_ota/src/esp_https_ota.c (esp_https_ota_begin).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otapub.checkins import BAD_REQUEST, CLIENT_NOT_DECLARED, NO_SPACE, NO_TARGET, UP_TO_DATE, UPDATE_OFFERED
from otapub.errors import Problem
from otapub.firmware import Digests
from otapub.layout import manifest_path
from otapub.mac import mac12 as to_mac12
from otapub.model import DEFAULT_CLIENTS, Device, Release
from otapub.versions import parse_version

SEED, IDF, HTTPUPDATE, ESP32FOTA, ESPHOME = "seed", "idf", "httpupdate", "esp32fota", "esphome"
CLIENTS = (SEED, HTTPUPDATE, ESP32FOTA, ESPHOME, IDF)

# -- where each client is pointed (`otapub token --urls`) ------------------------------------------


def client_urls(base: str, mac12: str, token: str, wire: str, clients: tuple[str, ...]) -> list[str]:
    """One line per client: the URL to configure and what else the device sends.

    ``token`` is the canonical token (the path key), ``wire`` what the device sends in a header.
    """
    lines = []
    for client in clients:
        if client == SEED:
            lines.append(f"seed:       {base}/api/firmware?device_id=...&hardware=...&version=...&mac=... "
                         f"with X-Device-Auth: {wire} (shim)")
        elif client == HTTPUPDATE:
            lines.append(f"httpupdate: {base}/api/httpupdate/{token} (shim; or {base}/api/httpupdate with Basic "
                         f"password {wire} or X-Device-Auth: {wire})")
        elif client == IDF:
            lines.append(f"idf:        {base}/d/{token}/{mac12}.json with X-Device-Auth: {wire}, then its "
                         "firmware_url (any static host)")
        else:
            lines.append(f"{client + ':':11} {base}/{manifest_path(token, mac12, client)} (any static host)")
    return lines


# -- static manifests ------------------------------------------------------------------------------


def semver3(version: str) -> str | None:
    """The release version as esp32FOTA's semver parser reads it: exactly "X.Y.Z".

    esp32FOTA (src/semver/semver.c, semver_parse_version) reads three numbers and silently drops
    a fourth; a "v" prefix makes it 0.0.0. None when the version has more than three numbers
    that matter (1.2.3.4 cannot be told from 1.2.3 by the device).
    """
    parts = list(parse_version(version))
    if len(parts) > 3 or any(part > 2**31 - 1 for part in parts):
        return None
    parts += [0] * (3 - len(parts))
    return ".".join(map(str, parts))


def chip_family(chip: str) -> str:
    """ESPHome's chipFamily for an esptool chip name: esp32c6 -> "ESP32-C6", esp32 -> "ESP32".

    ESPHome compares it with ESPHOME_VARIANT (esphome/components/esp32/const.py VARIANT_FRIENDLY).
    """
    upper = chip.upper()
    return upper if upper == "ESP32" or not upper.startswith("ESP32") else f"ESP32-{upper.removeprefix('ESP32')}"


@dataclass(frozen=True)
class ManifestTarget:
    """What a manifest says about a device's target release."""

    release: str
    version: str
    url: str  # firmware_url as the answer holds it: absolute, or /f/... on the site's host
    md5: str
    sha256: str
    size: int
    chip: str | None
    release_url: str | None = None
    local: bool = True  # a file the site holds (not a `url:` release)

    @classmethod
    def of(cls, release: Release, url: str, digests: Digests, chip: str | None) -> ManifestTarget:
        return cls(release.name, release.version, url, digests.md5, digests.sha256, digests.size, chip,
                   release.release_url, release.url is None)


def device_manifests(device: Device, token: str, target: ManifestTarget | None) -> dict[str, bytes]:
    """The static manifests of a device's clients, by site path (otapub.render)."""
    found: dict[str, bytes] = {}
    for client in device.clients:
        if client == ESP32FOTA:
            data = esp32fota_manifest(device.firmware_type or "", target)
        elif client == ESPHOME:
            data = esphome_manifest(device.device_id or (target.release if target else device.mac12), target)
        else:
            continue
        found[manifest_path(token, device.mac12, client)] = data
    return found


def esp32fota_manifest(firmware_type: str, target: ManifestTarget | None) -> bytes:
    """esp32FOTA's manifest: ``{"type", "version": "X.Y.Z", "url"}`` plus fields it ignores.

    esp32FOTA::checkJSONManifest compares ``type`` with its own firmware type (strcmp), reads
    ``version`` as semver and installs only when it is newer, then takes ``url`` as is. Without
    a target the manifest is ``[]``: an array whose no entry matches, so no update.
    """
    if target is None:
        return b"[]\n"
    version = semver3(target.version)
    assert version is not None, "checked by manifest_problems"  # noqa: S101 (a bug, not input)
    doc = {"type": firmware_type, "version": version, "url": target.url, "md5": target.md5,
           "sha256": target.sha256, "size": target.size, "release": target.release,
           "firmware_version": target.version}
    return json.dumps(doc, indent=1, ensure_ascii=False).encode() + b"\n"


def esphome_manifest(name: str, target: ManifestTarget | None) -> bytes:
    """ESPHome's ``update: platform: http_request`` manifest (ESP Web Tools' format).

    http_request_update.cpp requires ``name``, ``version`` and ``builds``; the build whose
    ``chipFamily`` equals the firmware's ESPHOME_VARIANT gives ``ota.path`` and ``ota.md5``
    (required) and ``summary``, ``release_url``. ESPHome offers any version that differs from
    its own (string inequality), so the manifest names the device's target and nothing else;
    without a target it has no build (ESPHome reports the manifest as unusable, installs nothing).
    """
    if target is None or target.chip is None:
        doc: dict[str, Any] = {"name": name, "version": "", "builds": []}
    else:
        ota: dict[str, Any] = {"path": target.url, "md5": target.md5,
                               "summary": f"{target.release} {target.version}"}
        if target.release_url:
            ota["release_url"] = target.release_url
        doc = {"name": name, "version": target.version,
               "builds": [{"chipFamily": chip_family(target.chip), "ota": ota}]}
    return json.dumps(doc, indent=1, ensure_ascii=False).encode() + b"\n"


def manifest_target(client: str, data: bytes) -> str | None:
    """The target version a rendered manifest names (the check-in's ``target``), read from the
    manifest itself: serving one is one file read. None for a manifest without a target.

    esp32FOTA's ``version`` is the target's in "X.Y.Z" form, so its manifest also carries the
    release's ``firmware_version`` as declared; ESPHome's ``version`` is the declared one.
    """
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    version = doc.get("firmware_version" if client == ESP32FOTA else "version") if isinstance(doc, dict) else None
    return version if isinstance(version, str) and version else None


def client_problem(device: Device, target: ManifestTarget | None) -> Problem | None:
    """Why a device's clients cannot be given its target, at the device's (or its group's) `client:`."""
    why = manifest_problems(device.clients, device.firmware_type, target)
    if not why:
        return None
    where = device.where("client") if "client" in device.field_pos else device.pos
    origin = f" (client from group {device.client_from!r})" if device.client_from else ""
    return where.problem(f"devices.{device.mac}.client", "; ".join(why) + origin)


def manifest_problems(clients: tuple[str, ...], firmware_type: str | None, target: ManifestTarget | None
                      ) -> list[str]:
    """Why a device's clients cannot be given its target (empty when they can)."""
    problems: list[str] = []
    if ESP32FOTA in clients and firmware_type is None:
        problems.append("client esp32fota needs `firmware_type:` (the type its esp32FOTA was built with)")
    if target is None:
        return problems
    absolute = target.url.startswith(("http://", "https://"))
    if ESP32FOTA in clients:
        if semver3(target.version) is None:
            problems.append(f"esp32FOTA reads versions as X.Y.Z: release {target.release!r} has version "
                            f"{target.version}")
        if not absolute:
            problems.append(f"esp32FOTA needs an absolute firmware URL, release {target.release!r} has "
                            f"{target.url}: set base_url")
    if ESPHOME in clients:
        if target.chip is None:
            problems.append(f"ESPHome's manifest names the chip: release {target.release!r} has no known chip "
                            "(declare `chip:`)")
        if not absolute and "http" in target.url:
            # http_request_update.cpp: a path that contains "http" anywhere is taken as a full URL
            problems.append(f"ESPHome takes a path containing 'http' as a URL: {target.url}; set base_url "
                            "or rename the firmware file")
    if HTTPUPDATE in clients and not target.local:
        problems.append(f"client httpupdate is sent the image by the shim itself: release {target.release!r} "
                        "must be a `file:` release, not a `url:`")
    return problems


# -- Arduino HTTPUpdate / ESP8266httpUpdate: the shim's decision ------------------------------------

# HTTPUpdate::handleUpdate sends these (arduino-esp32 libraries/HTTPUpdate/src/HTTPUpdate.cpp; the
# ESP8266 ones are spelt x-ESP8266-*): STA-MAC, AP-MAC, free-space, sketch-size, sketch-md5,
# sketch-sha256 (ESP32 only), chip-size, sdk-version, mode ("sketch" | "spiffs"; ESP8266's
# getAvailableVersion sends "version"), version (only when the sketch passes one).
PLATFORMS = ("ESP32", "ESP8266")
MODES = ("sketch", "spiffs", "version")
_DIGITS = re.compile(r"[0-9]{1,12}")
_MD5 = re.compile(r"[0-9A-Fa-f]{32}")
_MAX_HEADER = 128


@dataclass
class HTTPUpdateRequest:
    """The x-<platform>-* headers of one request, read (not yet judged)."""

    platform: str | None  # "ESP32" | "ESP8266"; None: no STA-MAC header at all
    mac: str | None
    version: str | None
    sketch_md5: str | None
    free_space: str | None
    mode: str | None

    @classmethod
    def read(cls, header: Any) -> HTTPUpdateRequest:
        """``header(name)``: a request header's value or None (any spelling of the name)."""
        for platform in PLATFORMS:
            mac = header(f"x-{platform}-STA-MAC")
            if mac is not None:
                def get(name: str, platform: str = platform) -> str | None:
                    value = header(f"x-{platform}-{name}")
                    return None if value is None else value.strip()[:_MAX_HEADER]
                return cls(platform, mac.strip()[:_MAX_HEADER], get("version"), get("sketch-md5"),
                           get("free-space"), get("mode"))
        return cls(None, None, None, None, None, None)


@dataclass
class HTTPUpdateAnswer:
    """What the shim answers: status, a JSON error or the image, and the check-in's decision."""

    status: int
    decision: str
    error: str | None = None
    mac12: str | None = None
    send_image: bool = False  # 200 with the image bytes (mode sketch)
    version_only: bool = False  # 200 with x-version and no image (mode version)


def httpupdate_check(request: HTTPUpdateRequest) -> HTTPUpdateAnswer | None:
    """The request's own mistakes (400), before any file is read; None when it is well formed."""
    if request.platform is None:
        return HTTPUpdateAnswer(400, BAD_REQUEST, "Missing x-ESP32-STA-MAC (or x-ESP8266-STA-MAC) header")
    try:
        mac12 = to_mac12(request.mac or "")
    except ValueError:
        return HTTPUpdateAnswer(400, BAD_REQUEST, f"Invalid MAC address format in x-{request.platform}-STA-MAC")
    mode = request.mode or "sketch"
    if mode not in MODES:
        return HTTPUpdateAnswer(400, BAD_REQUEST, f"Unsupported x-{request.platform}-mode "
                                                   f"(known: {', '.join(MODES)})", mac12)
    if request.version is not None and request.version != "":
        try:
            parse_version(request.version)
        except ValueError:
            return HTTPUpdateAnswer(400, BAD_REQUEST, f"Invalid version format in x-{request.platform}-version",
                                    mac12)
    elif mode == "sketch" and not (request.sketch_md5 and _MD5.fullmatch(request.sketch_md5)):
        return HTTPUpdateAnswer(400, BAD_REQUEST, f"Send x-{request.platform}-version (httpUpdate.update's "
                                f"currentVersion) or x-{request.platform}-sketch-md5", mac12)
    if request.free_space is not None and not _DIGITS.fullmatch(request.free_space):
        return HTTPUpdateAnswer(400, BAD_REQUEST, f"Invalid x-{request.platform}-free-space", mac12)
    return None


def httpupdate_decision(request: HTTPUpdateRequest, answer: Mapping[str, Any]) -> HTTPUpdateAnswer:
    """What an authenticated, well-formed request gets, from the device's answer file.

    - a device not declared ``client: httpupdate``: 403;
    - mode spiffs: 304 (otapub publishes no file-system images);
    - mode version (ESP8266httpUpdate::getAvailableVersion): 200 with ``x-version`` when there is a target;
    - no target, or nothing newer: 304 — "newer" from ``x-…-version`` (numeric, the downgrade
      rule applies), else, without a version, the running sketch's MD5 differs from the target's;
    - an image larger than the reported free space: 409;
    - else 200 with the image.
    """
    mac12 = to_mac12(request.mac or "")
    clients = answer.get("clients") or list(DEFAULT_CLIENTS)
    if HTTPUPDATE not in clients:
        return HTTPUpdateAnswer(403, CLIENT_NOT_DECLARED, "Device is not declared for client httpupdate "
                                                         "(fleet YAML `client:`)", mac12)
    mode = request.mode or "sketch"
    target = answer.get("firmware_version")
    if mode == "spiffs":
        return HTTPUpdateAnswer(304, NO_TARGET, None, mac12)
    if not target:
        return HTTPUpdateAnswer(200 if mode == "version" else 304, NO_TARGET, None, mac12,
                                version_only=mode == "version")
    if request.version:
        reported = parse_version(request.version)
        wanted = parse_version(target)
        newer = wanted > reported or (answer.get("allow_downgrade") is True and wanted != reported)
    elif request.sketch_md5:
        newer = request.sketch_md5.lower() != answer.get("md5")
    else:
        newer = False  # mode version without a version: report the target only
    decision = UPDATE_OFFERED if newer else UP_TO_DATE
    if mode == "version":
        return HTTPUpdateAnswer(200, decision, None, mac12, version_only=True)
    if not newer:
        return HTTPUpdateAnswer(304, decision, None, mac12)
    size = answer.get("size")
    if request.free_space is not None and isinstance(size, int) and size > int(request.free_space):
        return HTTPUpdateAnswer(409, NO_SPACE, f"Firmware {target} is {size} bytes, more than the "
                                f"{int(request.free_space)} bytes of free space the device reports "
                                f"(x-{request.platform}-free-space)", mac12)
    return HTTPUpdateAnswer(200, decision, None, mac12, send_image=True)


_SITE_FIRMWARE = re.compile(r"/(f/([0-9a-f]{64})/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99})")


def site_firmware(answer: Mapping[str, Any]) -> str | None:
    """The site path of the answer's firmware (``f/<sha256>/<name>``); None for a ``url:`` release.

    firmware_url is ``<base_url>/f/<sha256>/<name>`` for a file the build copied into the site.
    """
    url = answer.get("firmware_url")
    if not isinstance(url, str):
        return None
    match = _SITE_FIRMWARE.search(url)
    if match is None or match.end() != len(url) or match[2] != answer.get("sha256"):
        return None
    return match[1]
