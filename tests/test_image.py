"""ESP32 application image inspection (otapub.image) and synthesis (otapub.imagegen)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from otapub.chips import CHIPS
from otapub.image import APP_DESC, ImageError, ImageInfo, inspect_file, inspect_image, xor_checksum
from otapub.imagegen import make_app_image
from tests.conftest import ROOT, esp32_image


def patched(data: bytes, offset: int, new: bytes, *, rehash: bool = False) -> bytes:
    """Overwrite bytes at offset; with rehash, recompute the SHA-256 appended at the end."""
    out = bytearray(data)
    out[offset : offset + len(new)] = new
    if rehash:
        out[-32:] = hashlib.sha256(out[:-32]).digest()
    return bytes(out)


def flipped(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return patched(data, offset, bytes([data[offset] ^ mask]))


def assemble(segments: list[tuple[int, bytes]]) -> bytes:
    """An independent, minimal image writer: ESP32-C6 (chip id 13), SHA-256 appended."""
    extended = (0xEE, 0, 0, 0, 13, 0, 0, 0, 1)
    body = bytearray(struct.pack("<BBBBIBBBBHBHH4xB", 0xE9, len(segments), 2, 0x10, 0, *extended))
    checksum = 0xEF
    for addr, data in segments:
        body += struct.pack("<II", addr, len(data)) + data
        for byte in data:
            checksum ^= byte
    body += bytes(15 - len(body) % 16) + bytes([checksum])
    return bytes(body + hashlib.sha256(body).digest())


# --- the real images of the fixtures README -------------------------------------------------

APP_FIXTURES = {
    # name: (chip, chip_id, project_name, version, idf_ver, segment count)
    "esp_idf_blink_esp32s2.bin": (
        "esp32s2",
        2,
        "blink",
        "qa-test-v5.0-20220830-4-g4532e6",
        "v5.0-beta1-427-g4532e6e0b2-dirt",
        6,
    ),
    "hello-world-signed.bin": (
        "esp32",
        0,
        "hello-world",
        "v3.3-beta3-21-g0706bd0d1-dirty",
        "v3.3-beta3-21-g0706bd0d1-dirty",
        7,
    ),
    # Arduino-ESP32 2.x: the descriptor names the core library build, not the sketch.
    "fota_1.nosecurity.ino.bin": (
        "esp32",
        0,
        "arduino-lib-builder",
        "heads/idf-release/v4.4-0-gd4572",
        "v4.4.1-472-gc9140caf8c",
        6,
    ),
    "fota_fota_via_https_v2.bin": ("esp32", 0, None, None, None, 6),
}

REJECTED_FIXTURES = {
    "bootloader_esp32.bin": "not an application: no segment is mapped to flash (a bootloader?)",
    "esp32s3_header.bin": "not an application: no segment is mapped to flash (a bootloader?)",
    "esp8266_deepsleep.bin": "ESP8266 image, not ESP32 family",
    "truncated_blink_esp32s2.bin": (
        "truncated: segment 3 (length 0x15ce8 at offset 0x10018) runs past the end of the 90000-byte file"
    ),
}


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 15, 16, 17, 1000, 4099])
def test_xor_checksum_eight_bytes_at_a_time_is_the_bytewise_xor(length: int) -> None:
    data = hashlib.shake_256(f"xor-{length}".encode()).digest(length) if length else b""

    def bytewise(chunk: bytes, seed: int) -> int:
        for byte in chunk:
            seed ^= byte
        return seed

    assert xor_checksum(data) == bytewise(data, 0xEF)
    # a segment's data starts anywhere in the file: an unaligned view
    assert xor_checksum(memoryview(data)[1:], 0x12) == bytewise(data[1:], 0x12)


@pytest.mark.parametrize("name", sorted(APP_FIXTURES))
def test_real_application_images(name: str) -> None:
    chip, chip_id, project, version, idf_ver, count = APP_FIXTURES[name]
    path = esp32_image(name)
    info = inspect_file(path)
    assert (info.chip, info.chip_id) == (chip, chip_id)
    assert (info.project_name, info.version, info.idf_ver) == (project, version, idf_ver)
    assert len(info.segments) == count
    assert info.segments[0].offset == 0x18  # the first segment header follows the image header
    assert info.checksum_ok and info.hash_appended and info.sha256_ok
    assert info.size == path.stat().st_size
    if project is None:
        assert info.secure_version is None and info.date is None and info.time is None
    else:
        assert info.secure_version == 0
        assert re.fullmatch(r"[A-Z][a-z]{2} [ \d]\d \d{4}", info.date)
        assert re.fullmatch(r"\d\d:\d\d:\d\d", info.time)


def test_blink_details() -> None:
    info = inspect_file(esp32_image("esp_idf_blink_esp32s2.bin"))
    assert info.entry == 0x40022F84
    assert info.segments[0] == (0x3F000020, 0x18, 0x8C18)  # DROM, holding the descriptor
    assert info.segments[3] == (0x40080020, 0x10018, 0x15CE8)  # IROM
    assert (info.date, info.time) == ("Sep 13 2022", "19:46:07")


@pytest.mark.parametrize("name", sorted(REJECTED_FIXTURES))
def test_real_images_that_are_not_ota_apps(name: str) -> None:
    with pytest.raises(ImageError) as caught:
        inspect_file(esp32_image(name))
    assert str(caught.value) == REJECTED_FIXTURES[name]


def test_signed_image_signature_block_is_outside_the_image() -> None:
    data = esp32_image("hello-world-signed.bin").read_bytes()
    # Secure boot v1 signing appends a 4-byte version and a 64-byte ECDSA signature (plus
    # 12 bytes of padding) after the SHA-256; the image is padded to end on a 64 KiB page.
    assert len(data) == 0x30000
    inspect_image(data)
    end_of_hash = len(data) - 80
    assert hashlib.sha256(data[: end_of_hash - 32]).digest() == data[end_of_hash - 32 : end_of_hash]
    assert inspect_image(flipped(data, len(data) - 40)).project_name == "hello-world"
    with pytest.raises(ImageError, match="appended SHA-256 does not match"):
        inspect_image(flipped(data, end_of_hash - 1))


# --- images we generate ---------------------------------------------------------------------


@pytest.mark.parametrize("chip", sorted(CHIPS))
def test_generated_image_round_trip(chip: str) -> None:
    data = make_app_image(chip, version="1.3.8", project_name="PanicButton", secure_version=7, idf_ver="v5.2.1")
    info = inspect_image(data)
    assert (info.chip, info.chip_id) == (chip, CHIPS[chip].chip_id)
    descriptor = (info.version, info.project_name, info.secure_version, info.idf_ver)
    assert descriptor == ("1.3.8", "PanicButton", 7, "v5.2.1")
    assert (info.date, info.time) == ("Jan  1 2024", "00:00:00")
    assert info.hash_appended and info.sha256_ok and info.checksum_ok
    drom, irom = info.segments
    assert CHIPS[chip].drom[0] <= drom.load_addr < CHIPS[chip].drom[1]
    assert CHIPS[chip].irom[0] <= irom.load_addr < CHIPS[chip].irom[1]
    assert info.entry == irom.load_addr
    for segment in info.segments:
        # The bootloader maps whole 64 KiB pages: data offset and address must agree within one.
        assert (segment.offset + 8) % 0x10000 == segment.load_addr % 0x10000


def test_generated_images_are_deterministic_and_seeded() -> None:
    assert make_app_image() == make_app_image()
    assert make_app_image(seed=1) != make_app_image(seed=2)
    assert inspect_image(make_app_image(seed=1)).version == inspect_image(make_app_image()).version


@pytest.mark.parametrize("size", [4096, 5000, 65536, 300_000])
def test_generated_image_size(size: int) -> None:
    assert abs(len(make_app_image(size=size)) - size) < 16


def test_generated_esp32_image_avoids_a_nearly_empty_last_page() -> None:
    # Like esptool: an ESP32 flash segment must not end less than 0x24 bytes into a 64 KiB
    # page, which old ESP32 bootloaders failed to map. 65592 bytes would end at 0x10008.
    info = inspect_image(make_app_image("esp32", size=65592))
    irom = info.segments[1]
    assert (irom.offset + 8 + irom.length) % 0x10000 >= 0x24
    assert info.size > len(make_app_image("esp32c6", size=65592))  # only ESP32 needs the padding


def test_generated_image_without_descriptor_or_hash() -> None:
    info = inspect_image(make_app_image("esp32s3", with_descriptor=False, hash_appended=False))
    assert (info.hash_appended, info.sha256_ok) == (False, None)
    assert info.version is info.project_name is info.idf_ver is info.secure_version is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chip": "esp8266"}, "unknown chip 'esp8266'"),
        ({"version": "1" * 32}, "version '1111.*' is too long: at most 31 bytes"),
        ({"project_name": "p" * 40}, "project_name .* too long"),
        ({"secure_version": 2**32}, "does not fit in 32 bits"),
    ],
)
def test_generator_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_app_image(**kwargs)


def test_example_firmware_script(tmp_path: Path) -> None:
    out = tmp_path / "firmware" / "PanicButton_v1.3.8.bin"
    args = ["--chip", "esp32c6", "--version", "1.3.8", "--project", "PanicButton", "--seed", "3"]
    script = ROOT / "scripts" / "make_example_firmware.py"
    result = subprocess.run([sys.executable, str(script), str(out), *args], capture_output=True, text=True, check=True)
    data = out.read_bytes()
    assert data == make_app_image("esp32c6", version="1.3.8", project_name="PanicButton", seed=3)
    assert hashlib.md5(data).hexdigest() in result.stdout
    bad = subprocess.run([sys.executable, str(script), str(out), "--version", "x" * 40], capture_output=True)
    assert bad.returncode == 2 and b"too long" in bad.stderr


# --- each rule, and corrupted images --------------------------------------------------------


def test_flipped_segment_byte_breaks_the_checksum() -> None:
    data = make_app_image(hash_appended=False)
    info = inspect_image(data)
    stored = data[-1]  # without a hash, the checksum is the last byte
    filler = info.segments[1].offset + 8 + 100
    with pytest.raises(ImageError) as caught:
        inspect_image(flipped(data, filler, 0x5A))
    assert str(caught.value) == f"XOR checksum mismatch: stored {stored:#04x}, computed {stored ^ 0x5A:#04x}"
    # The checksum is verified before the hash, so a hashed image reports the same problem.
    hashed = make_app_image()
    with pytest.raises(ImageError, match="XOR checksum mismatch"):
        inspect_image(flipped(hashed, filler))
    # A second flip of the same bit position elsewhere cancels out in an XOR checksum:
    # only the SHA-256 notices such damage.
    twice = flipped(flipped(hashed, filler), filler + 1)
    with pytest.raises(ImageError, match="appended SHA-256 does not match"):
        inspect_image(twice)
    inspect_image(flipped(flipped(data, filler), filler + 1))


def test_flipped_hash_byte() -> None:
    data = make_app_image()
    with pytest.raises(ImageError, match="^appended SHA-256 does not match"):
        inspect_image(flipped(data, len(data) - 5))


def test_header_is_covered_by_the_hash_but_not_the_checksum() -> None:
    entry_at = 4
    new_entry = struct.pack("<I", 0x42000000)
    with pytest.raises(ImageError, match="appended SHA-256 does not match"):
        inspect_image(patched(make_app_image(), entry_at, new_entry))
    unhashed = patched(make_app_image(hash_appended=False), entry_at, new_entry)
    assert inspect_image(unhashed).entry == 0x42000000


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (0, "not an ESP32 image: the file is empty"),
        (20, "truncated: the 24-byte image header is cut off at 20 bytes"),
        (28, "truncated: the header of segment 0 at offset 0x18 runs past the end of the 28-byte"),
        (0x200, r"truncated: segment 1 \(length 0x\w+ at offset 0x120\) runs past the end of the 512-byte file"),
        (4096 - 33, "truncated: the checksum byte at offset 0xfdf is past the end"),
        (4096 - 1, "truncated: the appended SHA-256 at offset 0xfe0 runs past the end"),
    ],
)
def test_truncated(cut: int, message: str) -> None:
    data = make_app_image(size=4096)
    assert len(data) == 4096
    with pytest.raises(ImageError, match=f"^{message}"):
        inspect_image(data[:cut])


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (0x7F, "not an ESP32 image: first byte is 0x7F, expected 0xE9"),
        (0x00, "not an ESP32 image: first byte is 0x00, expected 0xE9"),
        (0xEA, r"ESP8266 image, not ESP32 family \(first byte 0xEA"),
    ],
)
def test_bad_magic(first: int, message: str) -> None:
    with pytest.raises(ImageError, match=f"^{message}"):
        inspect_image(patched(make_app_image(), 0, bytes([first])))


def test_esp8266_v1_image_even_when_byte_23_looks_like_a_flag() -> None:
    # ESP8266: 8-byte header, then straight to segment headers; no extended header.
    segment = bytes(16)  # data byte 7 lands at file offset 23: a "valid" 0 hash flag
    body = struct.pack("<BBBBI", 0xE9, 1, 2, 0x20, 0x40100004)
    body += struct.pack("<II", 0x40100000, len(segment)) + segment
    body += bytes(15 - len(body) % 16) + bytes([0xEF])
    assert body[23] == 0
    with pytest.raises(ImageError, match="^ESP8266 image, not ESP32 family"):
        inspect_image(body)


def test_bad_hash_flag_is_not_an_esp32_header() -> None:
    with pytest.raises(ImageError, match="ESP8266 image, not ESP32 family"):
        inspect_image(patched(make_app_image(), 23, b"\x02"))


def test_unknown_chip_id() -> None:
    with pytest.raises(ImageError, match=r"^unknown chip id 99 in the image header \(known: 0 "):
        inspect_image(patched(make_app_image(), 12, struct.pack("<H", 99)))


def test_too_many_segments() -> None:
    with pytest.raises(ImageError, match="17 segments, the bootloader allows 16"):
        inspect_image(patched(make_app_image(), 1, b"\x11"))


def test_image_without_flash_mapped_segments_is_not_an_application() -> None:
    data = make_app_image("esp32c6")
    drom, irom = inspect_image(data).segments
    sram = struct.pack("<I", 0x40800000)  # ESP32-C6 internal SRAM: loaded, not mapped
    ram_only = patched(patched(data, drom.offset, sram), irom.offset, sram, rehash=True)
    with pytest.raises(ImageError, match="^not an application: no segment is mapped to flash"):
        inspect_image(ram_only)
    # One flash-mapped segment is enough.
    assert inspect_image(patched(data, drom.offset, sram, rehash=True)).chip == "esp32c6"


def test_empty_flash_segment_does_not_make_an_application() -> None:
    ram_code = (0x40800000, bytes(64))
    with pytest.raises(ImageError, match="^not an application"):
        inspect_image(assemble([(0x42000020, b""), ram_code]))
    assert inspect_image(assemble([(0x42000020, bytes(4)), ram_code])).version is None


def test_descriptor_fields_are_nul_terminated() -> None:
    fields = (b"1.2\0junk", b"proj", b"12:00:00", b"Feb  3 2025", b"v5.3\0\xff")
    desc = APP_DESC.pack(0xABCD5432, 2, *fields).ljust(256, b"\0")
    info = inspect_image(assemble([(0x42800020, desc), (0x42010128, bytes(64))]))
    assert (info.version, info.project_name, info.idf_ver) == ("1.2", "proj", "v5.3")
    assert (info.secure_version, info.date, info.time) == (2, "Feb  3 2025", "12:00:00")


def test_descriptor_must_fit_in_the_first_segment() -> None:
    magic_only = struct.pack("<I", 0xABCD5432) + bytes(12)
    image = assemble([(0x42800020, magic_only), (0x42010040, bytes(512))])
    assert image[0x20:0x24] == struct.pack("<I", 0xABCD5432)
    assert inspect_image(image).version is None


def test_descriptor_needs_its_magic() -> None:
    data = make_app_image()
    assert inspect_image(data).version == "1.0.0"
    # Swapping two bytes of the magic keeps the XOR checksum valid.
    broken = patched(data, 0x20, b"\x54\x32\xcd\xab", rehash=True)
    assert inspect_image(broken).version is None


def test_to_dict_is_json_ready() -> None:
    info = inspect_image(make_app_image("esp32c3", version="2.0.1", hash_appended=False))
    loaded = json.loads(json.dumps(info.to_dict()))
    assert loaded["chip"] == "esp32c3" and loaded["version"] == "2.0.1"
    assert loaded["sha256_ok"] is None and loaded["checksum_ok"] is True
    assert loaded["segments"][0] == {"load_addr": 0x3C000020, "offset": 0x18, "length": 256}
    assert set(loaded) == set(ImageInfo.__dataclass_fields__)


def test_inspect_file_accepts_str_and_path(tmp_path: Path) -> None:
    path = tmp_path / "fw.bin"
    path.write_bytes(make_app_image(version="9.9.9"))
    assert inspect_file(path) == inspect_file(str(path))
    assert inspect_file(path).version == "9.9.9"


def test_image_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        inspect_image(b"\x7fELF")


# --- cross-check against esptool ------------------------------------------------------------


def esptool_image_info(path: Path) -> tuple[str, str]:
    """esptool's image_info report and the chip it detected (as an esptool chip name)."""
    import esptool
    from esptool.cmds import image_info

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):  # warnings too
        if esptool.__version__.startswith("4."):
            image_info(argparse.Namespace(filename=str(path), chip="auto", version="2"))
        else:
            image_info(str(path))
    text = out.getvalue()
    chip = re.search(r"Detected image type: (\S+)", text).group(1).lower().replace("-", "")
    return text, chip


def esptool_view(path: Path) -> dict:
    """What esptool says about an ESP32-family image: chip, header, segments, footer, app."""
    text, chip = esptool_image_info(path)
    from esptool.bin_image import LoadFirmwareImage

    image = LoadFirmwareImage(chip, str(path))

    def field(label: str) -> str | None:
        match = re.search(rf"^{label}: (.*)$", text, re.MULTILINE)
        return match and match.group(1)

    return {
        "chip": chip,
        "chip_id": image.chip_id,
        "entry": image.entrypoint,
        "segments": [(s.addr, s.file_offs, len(s.data)) for s in image.segments],
        "checksum_ok": image.checksum == image.calculate_checksum(),
        "hash_appended": image.append_digest,
        "sha256_ok": image.stored_digest == image.calc_digest if image.append_digest else None,
        "project_name": field("Project name"),
        "version": field("App version"),
        "idf_ver": field("ESP-IDF"),
        "secure_version": field("Secure version") and int(field("Secure version")),
        "compiled": field("Compile time"),
        "flash_mapped": [image.is_flash_addr(s.addr) for s in image.segments if s.data],
        "text": text,
    }


def ours(info: ImageInfo) -> dict:
    return {
        "chip": info.chip,
        "chip_id": info.chip_id,
        "entry": info.entry,
        "segments": [tuple(s) for s in info.segments],
        "checksum_ok": info.checksum_ok,
        "hash_appended": info.hash_appended,
        "sha256_ok": info.sha256_ok,
        "project_name": info.project_name,
        "version": info.version,
        "idf_ver": info.idf_ver,
        "secure_version": info.secure_version,
        "compiled": info.date and f"{info.date} {info.time}",
    }


@pytest.mark.parametrize("name", sorted(APP_FIXTURES))
def test_esptool_agrees_on_real_images(name: str) -> None:
    path = esp32_image(name)
    theirs = esptool_view(path)
    assert {k: theirs[k] for k in ours(inspect_file(path))} == ours(inspect_file(path))


def test_esptool_agrees_on_rejected_real_images() -> None:
    for name in ("bootloader_esp32.bin", "esp32s3_header.bin"):
        # esptool reads these fine, but none of their segments is in IROM/DROM.
        theirs = esptool_view(esp32_image(name))
        assert theirs["checksum_ok"] and not any(theirs["flash_mapped"])
    assert esptool_image_info(esp32_image("esp8266_deepsleep.bin"))[1] == "esp8266"
    with pytest.raises(Exception, match="End of file reading segment"):
        esptool_view(esp32_image("truncated_blink_esp32s2.bin"))


@pytest.mark.parametrize("chip", sorted(CHIPS))
@pytest.mark.parametrize(
    "kwargs",
    [
        {"version": "1.3.8", "project_name": "PanicButton", "secure_version": 3},
        {"with_descriptor": False, "hash_appended": False, "size": 70_000, "seed": 5},
    ],
    ids=["descriptor+hash", "bare"],
)
def test_esptool_agrees_on_generated_images(chip: str, kwargs: dict, tmp_path: Path) -> None:
    path = tmp_path / "app.bin"
    path.write_bytes(make_app_image(chip, **kwargs))
    theirs = esptool_view(path)
    assert {k: theirs[k] for k in ours(inspect_file(path))} == ours(inspect_file(path))
    assert all(theirs["flash_mapped"])
    assert "invalid" not in theirs["text"].lower() and "warning" not in theirs["text"].lower()


def test_chip_table_matches_esptool() -> None:
    from esptool.targets import CHIP_DEFS

    for name, chip in CHIPS.items():
        rom = CHIP_DEFS[name]
        assert chip.chip_id == rom.IMAGE_CHIP_ID, name
        assert chip.irom == (rom.IROM_MAP_START, rom.IROM_MAP_END), name
        assert chip.drom == (rom.DROM_MAP_START, rom.DROM_MAP_END), name
