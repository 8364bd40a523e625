"""The demo's disk chapter: the secret is not in the image; only the key opens it."""

from __future__ import annotations

from pathlib import Path

from cvm.scenarios import disk_at_rest


def test_pre_encrypted_root_hides_the_secret(tmp_path: Path) -> None:
    outcome = disk_at_rest.run(b"a secret that must not leak", b"pw", tmp_path)
    assert not outcome.host_finds_secret
    assert outcome.key_opens_volume and outcome.wrong_key_refused
    assert "aes-xts-plain64" in outcome.header_summary
    assert list(tmp_path.iterdir()) == []  # nothing, plaintext included, is left behind
