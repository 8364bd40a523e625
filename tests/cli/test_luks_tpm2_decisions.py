"""``cvm luks enroll-tpm2|unlock-tpm2``, one decision at a time: the signer's PCRs only with its
key, the PIN's source, the token chosen, and a PCR signature only for a token with a key."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cvm.cli import luks_tpm2
from cvm.errors import UsageError


def test_the_signers_pcrs_are_refused_without_its_key(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as refused:
        luks_tpm2.signer_options_unused(None, "7")
    assert str(refused.value) == "--public-key-pcrs: not for an enrollment without --public-key"
    luks_tpm2.signer_options_unused(None, "11")
    luks_tpm2.signer_options_unused(tmp_path / "pub.pem", "7")


def test_the_pin_comes_from_its_file_else_a_prompt_else_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, Any]] = []

    def prompt(text: str, **options: Any) -> str:
        asked.append((text, options))
        return "4321"

    monkeypatch.setattr("typer.prompt", prompt)
    (tmp_path / "pin").write_bytes(b"123456\r\n")
    assert luks_tpm2._pin(False, tmp_path / "pin") == b"123456"
    with pytest.raises(UsageError, match=r"^give --pin or --pin-file, not both$"):
        luks_tpm2._pin(True, tmp_path / "pin")
    assert asked == []
    assert luks_tpm2._pin(False, None) is None and asked == []
    assert luks_tpm2._pin(True, None) == b"4321"
    assert asked == [("TPM2 PIN", {"hide_input": True})]


def test_the_token_is_the_one_named_else_the_first(tmp_path: Path) -> None:
    tokens: dict[int, Any] = {4: "four", 2: "two"}
    assert luks_tpm2.chosen_token(tmp_path, tokens, None) == 2
    assert luks_tpm2.chosen_token(tmp_path, tokens, 4) == 4
    with pytest.raises(UsageError) as refused:
        luks_tpm2.chosen_token(tmp_path, tokens, 3)
    assert str(refused.value) == f"{tmp_path} has no systemd-tpm2 token 3"
    for token_id in (None, 0):
        with pytest.raises(UsageError) as refused:
            luks_tpm2.chosen_token(tmp_path, {}, token_id)
        assert str(refused.value) == f"{tmp_path} has no systemd-tpm2 token"


def test_a_pcr_signature_is_read_only_for_a_token_with_a_key(tmp_path: Path) -> None:
    signature = tmp_path / "sig.json"
    signature.write_text("{}")
    keyed, literal = SimpleNamespace(pubkey_pem=b"pem"), SimpleNamespace(pubkey_pem=None)
    assert luks_tpm2._read_signature(keyed, signature) == b"{}"  # type: ignore[arg-type]
    assert luks_tpm2._read_signature(keyed, None) is None  # type: ignore[arg-type]
    assert luks_tpm2._read_signature(literal, None) is None  # type: ignore[arg-type]
    with pytest.raises(UsageError) as refused:
        luks_tpm2._read_signature(literal, signature)  # type: ignore[arg-type]
    assert str(refused.value) == "the token has no public key: --pcr-signature is not needed"


def test_the_verbs_are_added_to_the_luks_group_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from cvm.cli import luks

    def verbs() -> list[tuple[str | None, Any]]:
        return [(c.name, c.callback) for c in luks.app.registered_commands]

    before = verbs()
    luks_tpm2.register()
    assert verbs() == before
    assert ("enroll-tpm2", luks_tpm2.enroll_tpm2) in before
    assert ("unlock-tpm2", luks_tpm2.unlock_tpm2) in before
    monkeypatch.setattr(luks, "app", typer.Typer())
    luks_tpm2.register()
    assert verbs() == [("enroll-tpm2", luks_tpm2.enroll_tpm2),
                       ("unlock-tpm2", luks_tpm2.unlock_tpm2)]
