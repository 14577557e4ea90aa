"""The fast reader for plain fleet files (otapub.fastyaml) against libyaml.

Whatever the fast reader accepts must read exactly as libyaml reads it: the same keys in the
same order, the same values and types, the same line:column for every mapping, key and value.
Everything else it must hand to libyaml (return None), never misread.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from otapub.fastyaml import fast_load
from otapub.located import Map
from otapub.yamlsource import libyaml_load, load_yaml
from tests.conftest import ROOT

# What the fast reader takes, and near misses that mean something else to YAML or to libyaml.
KEYS = ["devices", "device_id", "release", "_x", "a.b", "a/b", "a+b", "k-1", "y", "n", "AA:BB:CC:DD:EE:FF",
        "aa-bb-cc-00-00-01", "11:22:33:44:55:66", "00-11-22-33-44-55", '"AA:BB:CC:DD:EE:FF"', '"a: b"', '"a #b"',
        '"yes"', '"1"', "'x'", '"ü"', '""', "'a\\b'"]
ODD_KEYS = ["on", "yes", "Off", "null", "AABB.CCDD.EEFF", "'it''s'", '"tab\\t"', "1", "1.5", "2026-01-01", "<<",
            "a b", "? a", "&a k", "!t k", "-a", "~", "", "ü", "a:b",
            "k" * 1000, "k" * 1030, '"' + "k" * 1023 + '"']  # libyaml refuses keys of over 1,024 characters
VALUES = ["plain", "PanicAlarm_EEFF", "FireBeetle 2 ESP32-C6", "bench-1.0.8", "x(1)", "y", "n", "_u", "0", "7", "42",
          '"quoted"', '"a: b #c"', '""', '"yes"', '"1.10"', "'single'", "''", "Küche", "Küche 2", "a\u00a0b",
          "x\U0001f600", '"naïve: ü"', "'ö'", "'back\\slash'", "a - b", "a -b", "x (1)", "_", "e1", "a.inf"]
ODD_VALUES = ["a  b", "yes", "No", "TRUE", "off", "null", "Null", "~", "007", "0x1F", "0o7", "1_000", "-3", "+3",
              "1.5", "1.3.8", ".inf", ".nan", "1e3", "2026-12-01", "2026-12-01T09:00:00Z", "12:30", "1:2:3",
              "'a''b'", '"esc\\"aped"', '"\\u00e9"', "a#b", "a: b", "[1, 2]", "{a: 1}", "&anchor x", "*alias",
              "!!str x", "|", ">", "- item", "@x", "`x", "%x", "a\tb", "日本", "a\u2028b", "a\u0085b", "a\ufeffb",
              "a\x07b", "a\u0000", "1" * 18, "1" * 19, "1" * 5000, "2026-13-01", "!!int x"]
TRAILERS = ["", "", "", "", "", "", " ", "  ", " # comment", "  #c", " # — ünïcode"]
ODD_TRAILERS = ["#nospace", "\t", " \t# x", " # \u2028", " # \x85", " # \x07"]
FILLERS = ["", "# a comment", "   # indented comment", "  ", "# ünïcode —"]
ODD_FILLERS = ["---", "...", "\t", "#", "\ufeff# bom", "%YAML 1.1", "- x", "? x"]


def document(rng: random.Random) -> str:
    """A YAML document of nested block mappings; how many lines leave the subset varies."""
    odd = rng.choice([0.0, 0.0, 0.01, 0.03, 0.1, 0.3])  # the share of odd choices in this document
    lines: list[str] = []

    def pick(usual: list[str], near_misses: list[str]) -> str:
        return rng.choice(near_misses if rng.random() < odd else usual)

    def mapping(indent: int, depth: int) -> None:
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.2:
                lines.append(pick(FILLERS, ODD_FILLERS))
            key = pick(KEYS, ODD_KEYS)
            pad = " " * indent
            trailer = pick(TRAILERS, ODD_TRAILERS)
            if depth < 3 and rng.random() < 0.35:
                lines.append(f"{pad}{key}:{trailer}")
                mapping(indent + rng.randint(1, 4), depth + 1)
            elif rng.random() < odd:
                lines.append(f"{pad}{key}:{trailer}")  # no value: null
            else:
                value = pick(VALUES, ODD_VALUES)
                lines.append(f"{pad}{key}:{pick([' ', '  '], [' ', ''])}{value}{trailer}")

    if rng.random() < 0.2:
        lines.append(pick(FILLERS, ODD_FILLERS))
    mapping(rng.choice([0, 0, 0, 0, 0, 0, 1, 2]), 0)
    if rng.random() < odd * 3 and len(lines) > 1:  # a line at an indent of its own
        index = rng.randrange(len(lines))
        lines[index] = " " * rng.randint(1, 3) + lines[index]
    if rng.random() < odd * 3 and len(lines) > 1:  # a duplicated line
        index = rng.randrange(len(lines))
        lines.insert(index, lines[index])
    end = rng.choice(["\n", "\n", "", "\n\n"])
    return ("\r\n" if rng.random() < odd else "\n").join(lines) + end


def same(fast, slow) -> bool:
    """Equal values and types, and for mappings the same positions, recursively."""
    if type(fast) is not type(slow):
        return False
    if isinstance(fast, Map):
        if (fast.file, fast.line_column, fast.key_pos, fast.value_pos) != \
                (slow.file, slow.line_column, slow.key_pos, slow.value_pos):
            return False
        return list(fast) == list(slow) and all(same(fast[key], slow[key]) for key in fast)
    return fast == slow


def libyaml_or_error(text: str):
    try:
        return libyaml_load(text, "fleet/x.yaml")
    except Exception as exc:  # noqa: BLE001 - any libyaml refusal: the fast reader must have refused too
        return exc


def test_whatever_the_fast_reader_accepts_libyaml_reads_the_same():
    accepted = 0
    for seed in range(4000):
        text = document(random.Random(seed))
        fast = fast_load(text, "fleet/x.yaml")
        if fast is None:
            continue
        accepted += 1
        slow = libyaml_or_error(text)
        assert not isinstance(slow, Exception), f"seed {seed}: libyaml refuses what the fast reader took:\n{text}"
        assert same(fast, slow), f"seed {seed}: read differently:\n{text}"
        assert same(fast_load(text.encode(), "fleet/x.yaml"), slow), "bytes and text read alike"
    # Both sides of the generator matter: many accepted documents, and many handed to libyaml.
    assert 1000 < accepted < 3600, accepted


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=' \n\t:#-"\'abyes0127.{}[]&*!|>~', max_size=80))
def test_arbitrary_text_is_never_misread(text):
    fast = fast_load(text, "f.yaml")
    if fast is not None:
        assert same(fast, libyaml_load(text, "f.yaml"))


def test_plain_fleet_files_take_the_fast_reader():
    # The example fleet's device list and the benchmark's generated files are in the subset.
    text = (ROOT / "fleet/devices.yaml").read_text()
    assert fast_load(text, "fleet/devices.yaml") is not None
    bench = (
        'devices:\n  "02:E1:A8:68:F2:3A":\n    device_id: PanicAlarm_F23A\n'
        '    hardware: "FireBeetle 2 ESP32-C6"\n    release: bench-1.0.8\n'
    )
    doc = fast_load(bench, "d.yaml")
    assert doc == {"devices": {"02:E1:A8:68:F2:3A": {
        "device_id": "PanicAlarm_F23A", "hardware": "FireBeetle 2 ESP32-C6", "release": "bench-1.0.8"}}}
    assert doc["devices"]["02:E1:A8:68:F2:3A"].where("release") == ("d.yaml", 5, 14)


def test_outside_the_subset_libyaml_reads_and_reports():
    assert fast_load("devices:\n  aa: {device_id: x}\n", "f.yaml") is None  # flow style
    assert load_yaml("devices:\n  aa: {device_id: x}\n", "f.yaml") == {"devices": {"aa": {"device_id": "x"}}}
    assert fast_load("a: 1\na: 2\n", "f.yaml") is None  # libyaml's loader reports the duplicate
    try:
        load_yaml("a: 1\na: 2\n", "f.yaml")
    except Exception as exc:  # noqa: BLE001
        assert "duplicate key 'a'" in str(exc) and "f.yaml:2" in str(exc)
    else:
        raise AssertionError("duplicate key accepted")
