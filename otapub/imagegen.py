"""Synthesize small, valid ESP32-family application images for examples and tests.

The images follow the layout ESP-IDF builds produce (see otapub.image): a DROM segment that
starts with the app descriptor at file offset 0x20, then an IROM segment of filler. They are
not runnable, but every check of our parser, esptool's image_info and the bootloader's image
verification (segment/MMU page alignment, checksum, SHA-256) passes.
"""

from __future__ import annotations

import hashlib

from .chips import CHIPS
from .image import (
    APP_DESC,
    APP_DESC_MAGIC,
    APP_DESC_SIZE,
    HEADER,
    IMAGE_MAGIC,
    SEGMENT_HEADER,
    SHA256_LEN,
    xor_checksum,
)

_FLASH_MODE_DIO = 2
_FLASH_2MB = 0x10  # flash size code in the high nibble; frequency code 0 is valid on every chip
_WP_PIN_DISABLED = 0xEE  # what ESP-IDF writes: the ROM then ignores the WP pin setting
_MMU_PAGE = 0x10000  # a flash segment's file offset and load address agree modulo this
# __DATE__ / __TIME__ of a build; fixed so that images are reproducible byte for byte.
_BUILD_DATE, _BUILD_TIME = "Jan  1 2024", "00:00:00"


def _c_field(name: str, value: str, length: int) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) >= length:  # ESP-IDF keeps a terminating NUL in each char array
        raise ValueError(f"{name} {value!r} is too long: at most {length - 1} bytes")
    return raw


def make_app_image(
    chip: str = "esp32c6",
    version: str = "1.0.0",
    project_name: str = "example",
    secure_version: int = 0,
    size: int = 4096,
    idf_ver: str = "v5.1",
    with_descriptor: bool = True,
    hash_appended: bool = True,
    seed: int = 0,
) -> bytes:
    """Return a deterministic application image of about `size` bytes (at least 336).

    `seed` varies the filler, so images with equal descriptors can still differ.
    """
    target = CHIPS.get(chip)
    if target is None:
        raise ValueError(f"unknown chip {chip!r}; known: {', '.join(CHIPS)}")
    if not 0 <= secure_version < 2**32:
        raise ValueError(f"secure_version {secure_version} does not fit in 32 bits")

    if with_descriptor:
        drom = APP_DESC.pack(
            APP_DESC_MAGIC,
            secure_version,
            _c_field("version", version, 32),
            _c_field("project_name", project_name, 32),
            _BUILD_TIME.encode(),
            _BUILD_DATE.encode(),
            _c_field("idf_ver", idf_ver, 32),
        ).ljust(APP_DESC_SIZE, b"\0")
    else:
        drom = bytes(APP_DESC_SIZE)  # plain rodata: no descriptor magic at 0x20
    # The DROM data starts at file offset 0x20, so it is loaded at page offset 0x20 as well.
    drom_addr = target.drom[0] + HEADER.size + SEGMENT_HEADER.size

    irom_data_at = HEADER.size + 2 * SEGMENT_HEADER.size + len(drom)
    # One page above the mapping's start keeps IROM off the page the DROM segment uses, which
    # matters on chips where both ranges are the same (ESP32-C5, ESP32-P4).
    irom_addr = target.irom[0] + _MMU_PAGE + irom_data_at % _MMU_PAGE
    trailer = 16 + (SHA256_LEN if hash_appended else 0)  # worst-case checksum padding + hash
    filler_len = max(4, (size - irom_data_at - trailer) // 4 * 4)
    if chip == "esp32" and (irom_data_at + filler_len) % _MMU_PAGE < 0x24:
        # Like esptool: old ESP32 bootloaders did not map a last page holding < 0x24 bytes.
        filler_len += 0x24
    filler = hashlib.shake_256(f"otapub-imagegen-filler:{seed}".encode()).digest(filler_len)

    # WP pin, SPI drive strengths, chip id, min/max chip revision (0: "no limit"), hash flag
    extended = (_WP_PIN_DISABLED, 0, 0, 0, target.chip_id, 0, 0, 0, int(hash_appended))
    body = bytearray(HEADER.pack(IMAGE_MAGIC, 2, _FLASH_MODE_DIO, _FLASH_2MB, irom_addr, *extended))
    for addr, data in ((drom_addr, drom), (irom_addr, filler)):
        body += SEGMENT_HEADER.pack(addr, len(data)) + data
    body += bytes(15 - len(body) % 16)
    body.append(xor_checksum(drom + filler))
    if hash_appended:
        body += hashlib.sha256(body).digest()
    return bytes(body)
