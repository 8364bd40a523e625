"""``cvm demo --kbs``: a broker process on loopback releases the state key to the genuine VM and
refuses the tampered launch, and the audit log says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cvm.cli import demo_kbs
from cvm.cli.demo import demo_image
from cvm.cli.main import execute
from cvm.image.bundle import BuiltImage


def test_demo_with_a_broker_on_loopback(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # a digest on one line
    seeds: list[int | None] = []

    def seen(out: Path, seed: int | None) -> BuiltImage:
        seeds.append(seed)
        return demo_image(out, seed)

    monkeypatch.setattr(demo_kbs, "demo_image", seen)
    assert execute(["demo", "--kbs", "--seed", "5"]) == 0
    assert seeds == [5]  # the image is built from the demo's seed
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert re.search(r"cvm kbs serve at http://127\.0\.0\.1:\d+", out)
    assert "registered the image: reference values v1, the vTPM state key at " \
           "default/vtpm/state-key" in out
    assert "key broker released the vTPM state key" in out
    assert "OK: every stage verified" in out
    assert re.search(r"audit #\d+: attest affirmed .* audit #\d+: resource released — "
                     r"default/vtpm/state-key", out)
    assert "the SVSM holds the vTPM state key the owner registered" in out
    assert "the relayed HTTP): clean" in out
    assert "REFUSED at svsm: the key broker refused POST /kbs/v0/attest (401" in out
    denied = re.search(r"audit #\d+: attest denied measurement: expected ([0-9a-f]{96}), got "
                       r"([0-9a-f]{96})", out)
    assert denied is not None and denied.group(1) != denied.group(2)
    assert "HELD: the broker released the vTPM state key to the genuine VM and nothing " \
           "leaked; it refused the tampered launch (finding: measurement)" in out
