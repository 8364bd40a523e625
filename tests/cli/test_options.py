"""Options a use does not read are refused, all named in one line, in the order given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.cli.options import (
    check_workers,
    given_time,
    named,
    parse_file,
    reading,
    refuse_unused,
)
from cvm.errors import FormatError, IntegrityError, PolicyError, UsageError


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


def test_an_error_is_named_with_the_option_and_the_file_its_class_kept() -> None:
    path = Path("/in/state")
    error = named(IntegrityError("the tag does not verify"), path, "--state")
    assert type(error) is IntegrityError and error.exit_code == 66
    assert str(error) == "--state /in/state: the tag does not verify"
    assert error.args == ("--state /in/state: the tag does not verify",)
    assert str(named(FormatError("truncated"), path)) == "/in/state: truncated"


def test_an_error_that_names_the_file_already_is_left_as_it_is() -> None:
    error = named(FormatError("/in/state: truncated"), Path("/in/state"), "--state")
    assert str(error) == "/in/state: truncated"
    kept = named(PolicyError("no: /in/state is old"), Path("/in/state"))
    assert str(kept) == "no: /in/state is old"


def test_reading_names_every_project_error_of_its_block_and_nothing_else() -> None:
    path = Path("/in/log")
    with pytest.raises(PolicyError) as refused, reading(path, "--eventlog"):
        raise PolicyError("rolled back")
    assert str(refused.value) == "--eventlog /in/log: rolled back"
    assert refused.value.__suppress_context__
    with pytest.raises(KeyError), reading(path):
        raise KeyError("not a project error")
    with reading(path):
        pass


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


def test_a_time_given_is_iso_8601_and_utc_when_naive_and_none_is_now() -> None:
    assert given_time("--at", "2026-01-02T03:04:05") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    moment = given_time("--at", "2026-01-02T03:04:05+02:00")
    assert moment == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert moment.utcoffset() == timedelta(hours=2)
    now = given_time("--at", None)
    assert now.tzinfo is not None and abs(now - datetime.now(UTC)) < timedelta(seconds=5)
    with pytest.raises(UsageError) as refused:
        given_time("--now", "soon")
    assert str(refused.value) == "--now 'soon' is not an ISO 8601 time"
    assert refused.value.exit_code == 64
