"""``cvm eventlog show`` / ``replay`` on real logs, and errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType


def test_show_text_and_json(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = vectors / "realboot/eventlog.bin"
    assert execute(["eventlog", "show", str(log)]) == 0
    text = capsys.readouterr().out
    assert "crypto-agile event log, banks sha1, sha256, 50 events" in text
    assert "'grub_cmd: boot'" in text
    assert "HD(1,GPT,1c2b3a49-5867-4e8d-9a0b-c1d2e3f40516,0x800,0x1e000)" in text
    assert execute(["eventlog", "show", "--json", str(log)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert len(document["events"]) == 50
    assert document["events"][0]["event"]["kind"] == "Spec ID Event03"
    kinds = {e["event"]["kind"] for e in document["events"]}
    assert "unknown" not in kinds
    assert {"UEFI_VARIABLE_DATA", "UEFI_IMAGE_LOAD_EVENT", "UEFI_GPT_DATA"} <= kinds


def test_show_legacy_log(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["eventlog", "show", str(vectors / "tpm/go-tpm-tools/debian-10.bin")]) == 0
    assert "legacy SHA-1 event log" in capsys.readouterr().out


def test_replay_matches_expected(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = json.loads((vectors / "realboot/expected_pcrs.json").read_text())
    pcrs = next(iter(expected.values()))["expected_pcrs"]["sha256"]
    log = str(vectors / "realboot/eventlog.bin")
    assert execute(["eventlog", "replay", log, "--bank", "sha256", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert list(document) == ["sha256"]
    assert {k: v for k, v in document["sha256"].items() if k in pcrs} == pcrs
    assert execute(["eventlog", "replay", log]) == 0
    assert f"   7: {pcrs['7']}" in capsys.readouterr().out


def test_bad_input_is_one_line_with_the_documented_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], vectors: Path
) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 10)
    assert execute(["eventlog", "show", str(junk)]) == 65
    assert execute(["eventlog", "replay", str(tmp_path / "missing.bin")]) == 74
    log = str(vectors / "realboot/eventlog.bin")
    assert execute(["eventlog", "replay", log, "--bank", "md5"]) == 64
    assert execute(["eventlog", "replay", log, "--bank", "sha384"]) == 65
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4
    assert all(line.startswith("cvm: error: ") for line in errors)


def test_show_flags_digests_that_do_not_cover_the_data(
    vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(vectors / "tpm/go-tpm-tools/gdc-host.bin")
    assert execute(["eventlog", "show", log]) == 0
    flagged = [line for line in capsys.readouterr().out.splitlines()
               if "digest does not cover" in line]
    assert len(flagged) == 1 and "EV_S_CRTM_VERSION" in flagged[0]
    assert execute(["eventlog", "show", "--json", log]) == 0
    checks = [e["digest_check"] for e in json.loads(capsys.readouterr().out)["events"]]
    assert checks.count("mismatch") == 1 and checks.count("ok") > 50


def test_show_reads_vendor_info_stored_after_the_header(
    vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = vectors / "tpm/tpm2-tools/specid-vendordata.bin"
    assert execute(["eventlog", "show", "--json", str(log)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["events"][0]["event"]["vendor_info"] == "deadbeef"


def _tampered_realboot(vectors: Path) -> tuple[bytes, list[int]]:
    """The real boot's log with three records edited as an attacker would, and their numbers:
    the kernel command line edited and its NUL dropped, one byte appended to an authority
    record, a Boot#### variable record cut so that it no longer parses."""
    log = EventLog.parse((vectors / "realboot/eventlog.bin").read_bytes())
    events = list(log.events)
    cmdline = next(i for i, e in enumerate(events) if e.event.startswith(b"kernel_cmdline: "))
    authority = next(i for i, e in enumerate(events)
                     if e.event_type == EventType.EV_EFI_VARIABLE_AUTHORITY)
    boot = next(i for i, e in enumerate(events) if e.event_type == EventType.EV_EFI_VARIABLE_BOOT)
    edits = {
        cmdline: events[cmdline].event[:-1] + b" init=/bin/sh",
        authority: events[authority].event + b"\x00",
        boot: events[boot].event[:20],
    }
    for index, data in edits.items():
        events[index] = dataclasses.replace(events[index], event=data)
    return EventLog(log.spec_id, tuple(events)).to_bytes(), sorted(i + 1 for i in edits)


def test_show_flags_every_tampered_record(
    vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, numbers = _tampered_realboot(vectors)
    path = tmp_path / "tampered.bin"
    path.write_bytes(data)
    assert execute(["eventlog", "show", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    flagged = [int(line.split()[0]) for line in lines if "digest does not cover" in line]
    assert flagged == numbers
    assert sum("malformed (" in line for line in lines) == 1
    assert execute(["eventlog", "show", "--json", str(path)]) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    assert [e["number"] for e in events if e["digest_check"] == "mismatch"] == numbers


@pytest.mark.parametrize("content", [b"hello world\nthis is a text file\n", b"short\n", b""])
def test_show_on_a_text_file_says_not_an_event_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    assert execute(["eventlog", "show", str(path)]) == 65
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"cvm: error: {path}: not an event log")


def _mutated(data: bytes, rnd: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        where = rnd.randrange(len(out) + 1)
        choice = rnd.random()
        if choice < 0.5 and where < len(out):
            out[where] = rnd.randrange(256)
        elif choice < 0.75:
            del out[where : where + rnd.randint(1, 48)]
        else:
            out[where:where] = rnd.randbytes(rnd.randint(1, 12))
    return bytes(out)


@pytest.mark.parametrize("seed_log", ["realboot/eventlog.bin", "tpm/go-tpm-tools/debian-10.bin",
                                      "tpm/tpm2-tools/specid-vendordata.bin"])
def test_mutated_logs_give_only_documented_exit_codes(
    vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], seed_log: str
) -> None:
    rnd = random.Random(seed_log)
    seed = (vectors / seed_log).read_bytes()
    path = tmp_path / "mutated.bin"
    for _ in range(60):
        path.write_bytes(_mutated(seed, rnd))
        for command in (["show"], ["show", "--json"], ["replay"]):
            code = execute(["eventlog", *command, str(path)])
            captured = capsys.readouterr()
            assert code in (0, 65), (command, code, captured.err)
            assert "Traceback" not in captured.err
            assert captured.err.count("\n") == (0 if code == 0 else 1)
