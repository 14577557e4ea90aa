"""The ESP32 family's chips: esptool's names, the image chip ids, and the names people write.

The fleet's `chip:` fields (otapub.fleet, otapub.edit) and the image parser (otapub.image)
both use this table; the fleet checks need not import the parser for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Chip:
    """One ESP32-family target: esptool's chip name, image chip id and flash-mapped ranges."""

    name: str
    chip_id: int
    irom: tuple[int, int]  # [start, end) of instruction memory mapped from flash
    drom: tuple[int, int]  # [start, end) of data memory mapped from flash

    def is_flash_mapped(self, addr: int) -> bool:
        return any(start <= addr < end for start, end in (self.irom, self.drom))


# IROM_MAP_* / DROM_MAP_* and IMAGE_CHIP_ID as esptool's targets define them (checked by tests).
CHIPS: dict[str, Chip] = {
    chip.name: chip
    for chip in (
        Chip("esp32", 0, (0x400D0000, 0x40400000), (0x3F400000, 0x3F800000)),
        Chip("esp32s2", 2, (0x40080000, 0x40B80000), (0x3F000000, 0x3F3F0000)),
        Chip("esp32c3", 5, (0x42000000, 0x42800000), (0x3C000000, 0x3C800000)),
        Chip("esp32s3", 9, (0x42000000, 0x44000000), (0x3C000000, 0x3E000000)),
        Chip("esp32c2", 12, (0x42000000, 0x42400000), (0x3C000000, 0x3C400000)),
        Chip("esp32c6", 13, (0x42000000, 0x42800000), (0x42800000, 0x43000000)),
        Chip("esp32h2", 16, (0x42000000, 0x42800000), (0x42800000, 0x43000000)),
        Chip("esp32p4", 18, (0x40000000, 0x4C000000), (0x40000000, 0x4C000000)),
        Chip("esp32c5", 23, (0x42000000, 0x44000000), (0x42000000, 0x44000000)),
    )
}


# Not ESP32 family: an ESP8266 release's image is recognised (otapub.image.esp8266_image), not
# parsed; it exists for Arduino's ESP8266httpUpdate (docs/clients.md).
ESP8266 = "esp8266"
KNOWN_CHIPS = (*CHIPS, ESP8266)


def chip_name(text: str) -> str:
    """esptool's chip name for "ESP32-C6", "esp32_c6", "esp32c6" ... (not checked: see known_chip)."""
    return re.sub(r"[-_ ]", "", text.strip().lower())


def known_chip(text: str) -> str:
    """esptool's name of a chip given in any spelling; ValueError naming the known ones otherwise."""
    name = chip_name(text)
    if name not in KNOWN_CHIPS:
        raise ValueError(f"unknown chip {text!r} (known: {', '.join(KNOWN_CHIPS)})")
    return name
