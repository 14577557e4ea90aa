"""The renderer's answer encoding, and which modules the layers may pull in."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otapub.render import AnswerEncoder
from otapub.signing import canonical_json

FIELDS = {"release": "r", "firmware_url": "https://ota.example.com/f/é", "size": 3, "secure_version": None,
          "release_hardware": ['a"b', "c\\d"], "allow_downgrade": True, "checksum": "0" * 32}
values = st.one_of(st.none(), st.text(max_size=30), st.integers(-(2**40), 2**40))


@given(values, values, st.text(min_size=1, max_size=17))
def test_an_answer_is_canonical_json_unsigned_and_signed(device_id, hardware, mac):
    """Encoded from pieces, an answer is byte for byte what the signature's canonical form would be."""
    encoder = AnswerEncoder(FIELDS)
    answer = {**FIELDS, "device_id": device_id, "hardware": hardware, "mac": mac}
    assert encoder.encode(device_id, hardware, mac) == canonical_json(answer)
    assert encoder.signed(device_id, hardware, mac, "2026-03-08T12:00:00Z", 1772366400) == canonical_json(
        {**answer, "expires": "2026-03-08T12:00:00Z", "manifest_version": 1772366400})


def test_an_answer_field_may_not_be_one_that_signing_adds():
    with pytest.raises(ValueError, match="signing adds"):
        AnswerEncoder({**FIELDS, "expires": "2030-01-01T00:00:00Z"})


@pytest.mark.parametrize("modules,absent", [
    # the checks (what pull requests, plan, audit and edits run) never need the renderer
    (["otapub.check", "otapub.edit", "otapub.plan", "otapub.audit"], ["otapub.render", "otapub.publish"]),
    # the device path never pulls in the write side
    (["otapub.shim"], ["otapub.admin", "otapub.edit", "otapub.build", "otapub.render", "otapub.fleet"]),
    # the YAML readers: no cycle through the located values
    (["otapub.located", "otapub.fastyaml"], ["otapub.yamlsource"]),
    # `otapub status` answers from the check-in store: the fleet is loaded (and imported) only on a cache miss
    (["otapub.fleetstatus"], ["otapub.fleet", "otapub.targets", "otapub.inspection", "otapub.rollout", "yaml"]),
    # the fleet's chip names come without the image parser
    (["otapub.chips", "otapub.fleet"], ["otapub.image"]),
])
def test_layers_import_only_what_they_need(modules, absent):
    code = (f"import sys\nimport {', '.join(modules)}\n"
            f"print(sorted(m for m in {absent!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
