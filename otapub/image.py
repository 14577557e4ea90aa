"""Inspect ESP32-family application images (the .bin files an OTA update writes to flash).

The layout follows ESP-IDF's esp_image_format.h and esptool's bin_image.py:

    24-byte header: magic 0xE9, segment count, flash mode/size, entry point (u32 at 4),
                    then the extended header: chip_id (u16 at 12) ... hash_appended (byte 23)
    segments:       8-byte header (load address, length) followed by the data, each in turn
    checksum:       XOR of all segment data seeded with 0xEF, in the last byte of the padding
                    that brings the image to a multiple of 16 bytes
    SHA-256:        optional, over everything before it
    anything else:  ignored, as esptool and the bootloader do (secure boot signature blocks)

An OTA publisher must refuse anything the device's bootloader would refuse, and anything that
is not an application at all (a bootloader, an ESP8266 build), before it reaches a fleet.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass
from functools import reduce
from operator import xor
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

from .chips import CHIPS, Chip
from .errors import OtapubError

logger = logging.getLogger(__name__)

IMAGE_MAGIC = 0xE9
ESP8266_V2_MAGIC = 0xEA  # the ESP8266 "v2" OTA image that esptool recognises by its first byte
HEADER = struct.Struct("<BBBBIBBBBHBHH4xB")  # esp_image_header_t, 24 bytes
SEGMENT_HEADER = struct.Struct("<II")  # load address, data length
MAX_SEGMENTS = 16  # ESP_IMAGE_MAX_SEGMENTS: the bootloader refuses more
CHECKSUM_SEED = 0xEF
SHA256_LEN = 32

APP_DESC_MAGIC = 0xABCD5432
APP_DESC_OFFSET = HEADER.size + SEGMENT_HEADER.size  # 0x20: the first segment's data
APP_DESC_SIZE = 256
# The leading fields of esp_app_desc_t: magic_word, secure_version, reserv1[2], version[32],
# project_name[32], time[16], date[16], idf_ver[32]; the rest (ELF SHA-256, eFuse revisions,
# MMU page size, reserved) is not needed here and is zero in generated images.
APP_DESC = struct.Struct("<II8x32s32s16s16s32s")


# Where an ESP8266 segment may be loaded (DRAM .. end of IROM in esptool's ESP8266ROM); in an
# ESP32 image the same word holds the WP pin and SPI drive strengths, which never reach it.
_ESP8266_LOAD_RANGE = (0x3FFE8000, 0x40300000)


_CHIPS_BY_ID = {chip.chip_id: chip for chip in CHIPS.values()}


def xor_checksum(data: bytes | memoryview, seed: int = CHECKSUM_SEED) -> int:
    """``seed`` XOR every byte of ``data``: eight bytes at a time, then the eight of the result
    (a byte-by-byte reduce took 16 ms per MiB of firmware)."""
    view = memoryview(data).cast("B")
    whole = len(view) - len(view) % 8
    value = seed
    for byte in reduce(xor, view[:whole].cast("Q"), 0).to_bytes(8, "little"):
        value ^= byte
    for byte in view[whole:]:
        value ^= byte
    return value


class ImageError(OtapubError, ValueError):
    """The bytes are not a valid ESP32-family application image; the message says why."""


class Segment(NamedTuple):
    load_addr: int
    offset: int  # file offset of the segment's 8-byte header, like esptool's "File offs"
    length: int


@dataclass(frozen=True)
class ImageInfo:
    chip: str
    chip_id: int
    entry: int
    segments: tuple[Segment, ...]
    checksum_ok: bool
    hash_appended: bool
    sha256_ok: bool | None  # None when no SHA-256 is appended
    size: int
    # From the app descriptor (esp_app_desc_t); all None when the image has none.
    version: str | None = None
    project_name: str | None = None
    idf_ver: str | None = None
    secure_version: int | None = None
    date: str | None = None
    time: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; segments become objects with named fields."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["segments"] = [segment._asdict() for segment in self.segments]
        return data


def _c_string(raw: bytes) -> str:
    # C char arrays: the text ends at the first NUL (or fills the array without one).
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _parse_app_desc(data: bytes) -> dict[str, Any]:
    magic, secure_version, version, project, time, date, idf_ver = APP_DESC.unpack_from(data, APP_DESC_OFFSET)
    if magic != APP_DESC_MAGIC:
        return {}
    return {
        "secure_version": secure_version,
        "version": _c_string(version),
        "project_name": _c_string(project),
        "time": _c_string(time),
        "date": _c_string(date),
        "idf_ver": _c_string(idf_ver),
    }


def _read_header(data: bytes) -> tuple[Chip, int, int, bool]:
    """Check the 24-byte header; return (chip, segment count, entry point, hash_appended)."""
    size = len(data)
    if not data:
        raise ImageError("not an ESP32 image: the file is empty")
    if data[0] == ESP8266_V2_MAGIC:
        raise ImageError("ESP8266 image, not ESP32 family (first byte 0xEA: ESP8266 v2 format)")
    if data[0] != IMAGE_MAGIC:
        raise ImageError(f"not an ESP32 image: first byte is 0x{data[0]:02X}, expected 0xE9")
    if size < HEADER.size:
        raise ImageError(f"truncated: the {HEADER.size}-byte image header is cut off at {size} bytes")
    _, count, _, _, entry, *_, chip_id, _, _, _, hash_flag = HEADER.unpack_from(data)
    if esp8266_image(data):
        raise ImageError("ESP8266 image, not ESP32 family")
    chip = _CHIPS_BY_ID.get(chip_id)
    if chip is None:
        known = ", ".join(f"{c.chip_id} ({c.name})" for c in CHIPS.values())
        raise ImageError(f"unknown chip id {chip_id} in the image header (known: {known})")
    if count > MAX_SEGMENTS:
        raise ImageError(f"bad image header: {count} segments, the bootloader allows {MAX_SEGMENTS}")
    return chip, count, entry, hash_flag == 1


def esp8266_image(data: bytes) -> bool:
    """Whether ``data`` starts like an ESP8266 image (v1 with first byte 0xE9, or v2 with 0xEA).

    ESP8266 images have no extended header: the first segment header follows the 8-byte common
    one. esptool calls an image ESP8266 when byte 23 is not a 0/1 flag; we also recognise an
    ESP8266 load address where ESP32 images keep their SPI pin settings.
    """
    if data[:1] == bytes([ESP8266_V2_MAGIC]):
        return len(data) >= 16
    if data[:1] != bytes([IMAGE_MAGIC]) or len(data) < HEADER.size:
        return False
    (first_word,) = struct.unpack_from("<I", data, 8)
    return data[23] not in (0, 1) or _ESP8266_LOAD_RANGE[0] <= first_word < _ESP8266_LOAD_RANGE[1]


def inspect_image(data: bytes) -> ImageInfo:
    """Parse and verify an ESP32-family application image; raise ImageError if it is not one."""
    chip, count, entry, hash_appended = _read_header(data)
    size = len(data)

    segments: list[Segment] = []
    checksum = CHECKSUM_SEED
    pos = HEADER.size
    for index in range(count):
        if pos + SEGMENT_HEADER.size > size:
            raise ImageError(
                f"truncated: the header of segment {index} at offset {pos:#x} runs past the end of the {size}-byte file"
            )
        load_addr, length = SEGMENT_HEADER.unpack_from(data, pos)
        end = pos + SEGMENT_HEADER.size + length
        if end > size:
            raise ImageError(
                f"truncated: segment {index} (length {length:#x} at offset {pos:#x}) runs past "
                f"the end of the {size}-byte file"
            )
        checksum = xor_checksum(memoryview(data)[pos + SEGMENT_HEADER.size : end], checksum)
        segments.append(Segment(load_addr, pos, length))
        pos = end

    checksum_at = pos | 0xF  # the last byte of the padding to a 16-byte boundary
    if checksum_at >= size:
        raise ImageError(
            f"truncated: the checksum byte at offset {checksum_at:#x} is past the end of the {size}-byte file"
        )
    if data[checksum_at] != checksum:
        raise ImageError(f"XOR checksum mismatch: stored {data[checksum_at]:#04x}, computed {checksum:#04x}")
    end = checksum_at + 1

    sha256_ok = None
    if hash_appended:
        stored = data[end : end + SHA256_LEN]
        if len(stored) < SHA256_LEN:
            raise ImageError(
                f"truncated: the appended SHA-256 at offset {end:#x} runs past the end of the {size}-byte file"
            )
        if hashlib.sha256(data[:end]).digest() != stored:
            raise ImageError("appended SHA-256 does not match: the image is corrupt")
        sha256_ok = True
        end += SHA256_LEN
    if end < size:
        # Signed images carry their signature block here; the bootloader's secure boot checks
        # it, not the image format, and the OTA checksums cover the whole file anyway.
        logger.debug("%d bytes after the image end at %#x are not part of it", size - end, end)

    if not any(length and chip.is_flash_mapped(addr) for addr, _, length in segments):
        raise ImageError("not an application: no segment is mapped to flash (a bootloader?)")

    # ESP-IDF places esp_app_desc_t at the start of the first (DROM) segment.
    has_desc = segments[0].length >= APP_DESC_SIZE
    info = ImageInfo(
        chip=chip.name,
        chip_id=chip.chip_id,
        entry=entry,
        segments=tuple(segments),
        checksum_ok=True,
        hash_appended=hash_appended,
        sha256_ok=sha256_ok,
        size=size,
        **(_parse_app_desc(data) if has_desc else {}),
    )
    logger.debug("parsed %s image: %d segments, version %s", info.chip, count, info.version)
    return info


def inspect_file(path: str | PathLike[str]) -> ImageInfo:
    """inspect_image() on a file's contents; OSError propagates unchanged."""
    return inspect_image(Path(path).read_bytes())
