"""Options a use does not read are refused, all named in one line, in the order given."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.cli.options import check_workers, parse_file, refuse_unused
from cvm.errors import FormatError, UsageError


def test_nothing_given_is_nothing_refused() -> None:
    refuse_unused("--target qemu", {})
    refuse_unused("--target qemu", {"--seal": False, "--mode": False})


def test_each_option_given_is_named_in_order_and_only_those() -> None:
    with pytest.raises(UsageError) as refused:
        refuse_unused("--target qemu", {"--seal": True, "--mode": False, "--dbx": True})
    assert str(refused.value) == "--seal, --dbx: not for --target qemu"
    with pytest.raises(UsageError) as refused:
        refuse_unused("--backend emulated", {"--dry-run": True})
    assert str(refused.value) == "--dry-run: not for --backend emulated"
    assert refused.value.exit_code == 64


@pytest.mark.parametrize("count", [1, 2, 64])
def test_a_worker_count_from_1_to_64_is_taken(count: int) -> None:
    assert check_workers(count) == count


@pytest.mark.parametrize("count", [0, -1, 65])
def test_a_worker_count_outside_1_to_64_is_refused(count: int) -> None:
    with pytest.raises(UsageError) as refused:
        check_workers(count)
    assert str(refused.value) == f"--workers: {count} is not between 1 and 64"


@pytest.mark.parametrize("command", [["attack", "matrix"], ["demo"], ["kbs", "serve"]])
def test_every_command_with_workers_refuses_zero_before_it_starts(
        command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert execute([*command, "--workers", "0"]) == 64
    assert capsys.readouterr().err == "cvm: error: --workers: 0 is not between 1 and 64\n"


def _digits(data: bytes) -> int:
    if not data.isdigit():
        raise FormatError("not digits")
    return int(data)


def test_a_file_an_option_names_is_parsed_and_its_fault_named_with_both(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_bytes(b"42")
    bad.write_bytes(b"forty-two")
    assert parse_file(good, "--count", _digits) == 42
    with pytest.raises(FormatError) as refused:
        parse_file(bad, "--count", _digits)
    assert str(refused.value) == f"--count {bad}: not digits"
    with pytest.raises(FileNotFoundError):
        parse_file(tmp_path / "missing", "--count", _digits)


@pytest.mark.parametrize("command", [
    ["sb", "sign", "IMAGE", "--key", "KEY", "--cert", "CERT", "-o", "OUT"],
    ["varstore", "auth", "db", "--key", "KEY", "--cert", "CERT", "-o", "OUT"],
])
def test_a_signing_key_that_is_not_one_is_named_with_its_option_and_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    files = {"IMAGE": tmp_path / "image.efi", "KEY": tmp_path / "key.pem",
             "CERT": tmp_path / "cert.pem", "OUT": tmp_path / "out"}
    for name in ("IMAGE", "KEY", "CERT"):
        files[name].write_bytes(b"not a key or a certificate")
    argv = [str(files[word]) if word in files else word for word in command]
    assert execute(argv) == 65
    err = capsys.readouterr().err
    assert err.startswith(f"cvm: error: --key {files['KEY']}: not an unencrypted private key: ")
    assert err.count("\n") == 1 and not files["OUT"].exists()
