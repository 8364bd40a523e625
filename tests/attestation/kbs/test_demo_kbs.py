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


class _Process:
    """A broker process that is never started."""

    def __init__(self, command: list[str], **given: object) -> None:
        self.command = command

    def terminate(self) -> None:
        return None

    def wait(self, timeout: float | None = None) -> int:
        return 0


def test_the_admin_token_is_private_from_its_creation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: None) -> None:
    """Created 0600, not made so afterwards: with no chmod at all, it is still private."""
    started: list[_Process] = []

    def start(command: list[str], **given: object) -> _Process:
        started.append(_Process(command))
        return started[-1]

    def no_chmod(self: Path, mode: int, **given: object) -> None:
        raise AssertionError(f"chmod {self}")

    monkeypatch.setattr(demo_kbs.subprocess, "Popen", start)
    monkeypatch.setattr(demo_kbs, "wait_listening", lambda process, port, log: None)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    with demo_kbs.broker_process(tmp_path) as (url, token):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        token_file = tmp_path / "kbs-admin.token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert re.fullmatch(r"[0-9a-f]{64}", token) and token_file.read_text() == token + "\n"
        assert started[0].command[-4:-2] == ["--admin-token-file", str(token_file)]
