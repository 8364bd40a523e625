"""The trace of one VM run (:mod:`cvm.guest.trace`) without a VM: who each event-log record is
told to be from, the comparison of every predicted PCR with the vTPM's and the replayed log's,
and each way a run is not what the owner predicted — every one must make ``ok`` false and be
told, never "OK" or "equal"."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cvm.errors import IntegrityError
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.guest.boot.initramfs import RootOpened, WorkloadResult
from cvm.guest.trace import (
    TraceStep,
    VmTrace,
    compare_pcrs,
    failures,
    pcrs_match,
    step_of,
    steps_from_log,
    workload_round_trip,
)

SHA1, SHA256 = 0x0004, 0x000B
A, B, C, D = (bytes([n]) * 32 for n in (0xA1, 0xB2, 0xC3, 0xD4))
S = bytes([0x51]) * 20
OK_LINE = ("OK: every stage verified, PCRs equal the prediction and the log, the root opened, "
           "the workload's data round-tripped")
WORKLOAD = WorkloadResult("/srv/data/log", 4096, True, "ab" * 32)
ROOT = RootOpened(0, 1, "signed", (7, 11), "sha256", "11111111-2222-3333-4444-555555555555",
                  ("/srv/data/README",))


def _event(pcr: int, kind: int, data: bytes = b"\x00\x00\x00\x00") -> PcrEvent:
    return PcrEvent(pcr, kind, ((SHA1, bytes(20)), (SHA256, bytes([pcr]) * 32)), data)


@pytest.mark.parametrize(("pcr", "kind", "actor", "verb"), [
    (11, EventType.EV_IPL, "kernel stub", "measured"),
    (11, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, "kernel stub", "loaded"),
    (9, EventType.EV_EVENT_TAG, "kernel stub", "measured"),
    (8, EventType.EV_EVENT_TAG, "firmware", "measured"),
    (8, EventType.EV_IPL, "GRUB", "measured"),
    (9, EventType.EV_IPL, "GRUB", "measured"),
    (10, EventType.EV_IPL, "firmware", "measured"),
    (7, EventType.EV_EFI_VARIABLE_AUTHORITY, "firmware/shim", "verified"),
    (1, EventType.EV_EFI_VARIABLE_AUTHORITY, "firmware", "verified"),
    (4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, "firmware", "loaded"),
    (7, EventType.EV_SEPARATOR, "firmware", "measured"),
])
def test_each_record_is_told_by_who_measured_it_and_how(pcr: int, kind: int, actor: str,
                                                        verb: str) -> None:
    step = step_of(_event(pcr, kind, b"\x01\x02\x03"))
    assert (step.actor, step.verb, step.pcr) == (actor, verb, pcr)
    assert step.digest == (bytes([pcr]) * 32).hex()  # the sha256 bank's digest, not sha1's


def test_a_records_subject_is_its_decoded_data_on_one_line() -> None:
    separator = step_of(_event(7, EventType.EV_SEPARATOR))
    assert separator.subject == "EV_SEPARATOR: separator"
    command = step_of(_event(8, EventType.EV_IPL, b"grub_cmd  linux\t  /vmlinuz"))
    assert command.subject == "EV_IPL: 'grub_cmd linux\\t /vmlinuz'"
    undecodable = step_of(_event(7, EventType.EV_SEPARATOR, b"\x00\x00\x00"))
    assert undecodable.subject == "EV_SEPARATOR: 3 bytes"
    authority = step_of(_event(7, EventType.EV_EFI_VARIABLE_AUTHORITY, b"\x01\x02"))
    assert authority.subject == "EV_EFI_VARIABLE_AUTHORITY: an image against 2 bytes"
    sha1_only = step_of(PcrEvent(7, EventType.EV_SEPARATOR, ((SHA1, S),), bytes(4)))
    assert sha1_only.digest == ""


def test_the_log_gives_one_step_per_measured_record() -> None:
    log = EventLog(None, (_event(0, EventType.EV_NO_ACTION, b"x"),
                          _event(7, EventType.EV_SEPARATOR),
                          _event(0, EventType.EV_NO_ACTION, b"y"),
                          _event(4, EventType.EV_SEPARATOR)))
    assert [(s.pcr, s.subject) for s in steps_from_log(log)] == [
        (7, "EV_SEPARATOR: separator"), (4, "EV_SEPARATOR: separator")]


def test_a_step_prints_and_serialises_with_its_pcr_even_pcr_0() -> None:
    measured = TraceStep("firmware", "measured", "EV_SEPARATOR: separator", 0, "00ff")
    assert measured.line() == "     firmware  measured  EV_SEPARATOR: separator → PCR 0"
    assert measured.to_json() == {"actor": "firmware", "verb": "measured",
                                  "subject": "EV_SEPARATOR: separator", "pcr": 0,
                                  "sha256": "00ff"}
    told = TraceStep("host", "launched", "a plain VM")
    assert told.line() == "         host  launched  a plain VM"
    assert told.to_json() == {"actor": "host", "verb": "launched", "subject": "a plain VM"}


def test_a_long_subject_is_cut_to_72_characters() -> None:
    exact = TraceStep("a", "b", "x" * 72).line()
    assert exact.endswith(" " + "x" * 72)
    cut = TraceStep("a", "b", "x" * 73, 4).line()
    assert cut.endswith(" " + "x" * 71 + "… → PCR 4")


def _good() -> VmTrace:
    trace = VmTrace("sev-snp", 2)
    trace.predicted = {"sha256": {0: A, 7: B}, "sha1": {7: S}}
    trace.pcrs = {"sha256": {0: A, 7: B, 8: C}, "sha1": {7: S, 8: S}}
    trace.replayed = {"sha256": {0: A, 7: B, 8: C}, "sha1": {7: S}}
    trace.launch_accepted = True
    trace.root, trace.workload = ROOT, WORKLOAD
    return trace


def test_a_run_as_predicted_is_ok_and_says_so() -> None:
    trace = _good()
    assert trace.ok and trace.pcrs_match and trace.workload_ok and trace.unsealed
    assert failures(trace) == []
    assert trace.compared() == {0: (True, True), 7: (True, True)}  # sha256 by default
    assert trace.compared("sha1") == {7: (True, True)}
    assert trace.render().splitlines()[-2:] == [OK_LINE, "boot time 0 ms ()"]
    assert trace.to_json()["ok"] is True and trace.to_json()["failures"] == []
    plain = _good()
    plain.launch_accepted = None  # a plain VM: no launch measurement to accept
    assert plain.ok


def _pcr_differs(trace: VmTrace) -> None:
    trace.pcrs["sha256"][7] = D
    trace.replayed["sha256"][7] = D


def _log_differs(trace: VmTrace) -> None:
    trace.replayed["sha1"][7] = bytes(20)


def _vtpm_differs(trace: VmTrace) -> None:
    trace.pcrs["sha256"][0] = D


def _not_read(trace: VmTrace) -> None:
    trace.pcrs = {}
    trace.replayed = {}


def _one_pcr_not_read(trace: VmTrace) -> None:
    del trace.pcrs["sha256"][0]
    del trace.replayed["sha256"][0]


def _nothing_predicted(trace: VmTrace) -> None:
    trace.predicted = {}


def _empty_banks(trace: VmTrace) -> None:
    trace.predicted = {"sha1": {}, "sha256": {}}


def _launch_differs(trace: VmTrace) -> None:
    trace.launch_accepted = False


def _no_workload(trace: VmTrace) -> None:
    trace.workload = None


def _no_round_trip(trace: VmTrace) -> None:
    trace.workload = replace(WORKLOAD, round_trip=False)


@pytest.mark.parametrize(("edit", "match", "told"), [
    (_pcr_differs, False, ["sha256 PCR 7 differs from the prediction"]),
    (_log_differs, False, ["sha1 PCR 7 differs from the replayed log"]),
    (_vtpm_differs, False, ["sha256 PCR 0 differs from the prediction",
                            "sha256 PCR 0 differs from the replayed log"]),
    (_one_pcr_not_read, False, ["sha256 PCR 0 was not read from the vTPM"]),
    (_not_read, False, ["sha1 PCR 7 was not read from the vTPM",
                        "sha256 PCR 0 was not read from the vTPM",
                        "sha256 PCR 7 was not read from the vTPM"]),
    (_nothing_predicted, False, ["no PCR was predicted"]),
    (_empty_banks, False, ["no PCR was predicted"]),
    (_launch_differs, True, ["the launch measurement differs from the prediction"]),
    (_no_workload, True, ["the workload did not run"]),
    (_no_round_trip, True, ["the workload's data did not round-trip"]),
])
def test_each_way_a_run_differs_is_not_ok_and_is_told(edit: object, match: bool,
                                                      told: list[str]) -> None:
    trace = _good()
    assert callable(edit)
    edit(trace)
    assert not trace.ok and trace.pcrs_match is match
    assert failures(trace) == told
    lines = trace.render().splitlines()
    assert lines[-2] == "NOT VERIFIED: " + "; ".join(told)
    assert OK_LINE not in lines and not any(line.startswith("REFUSED") for line in lines)
    document = trace.to_json()
    assert document["ok"] is False and document["failures"] == told
    assert document["pcrs_match_prediction_and_replay"] is match


def test_a_refused_run_is_told_refused_whatever_else_holds() -> None:
    trace = _good()
    trace.refused = ("svsm", IntegrityError("the state does not open"))
    assert not trace.ok and trace.pcrs_match
    assert failures(trace) == ["refused at svsm"]
    lines = trace.render().splitlines()
    assert lines[-2] == "REFUSED at svsm: the state does not open"
    assert OK_LINE not in lines and not any("NOT VERIFIED" in line for line in lines)
    assert trace.to_json()["refused"] == {"stage": "svsm", "error": "IntegrityError",
                                          "message": "the state does not open"}


def test_every_predicted_pcr_is_told_equal_or_differs_both_ways() -> None:
    trace = _good()
    trace.pcrs["sha256"][0] = D  # differs from both
    trace.replayed["sha256"][7] = C  # the vTPM equals the prediction, not the log
    trace.replayed["sha1"][7] = bytes(20)
    trace.pcrs["sha1"][7] = bytes(20)  # the vTPM equals the log, not the prediction
    trace.svsm_calls, trace.extends = 31, 12
    trace.timings = {"launch": 0.0124, "svsm": 1.0}
    assert trace.render().splitlines() == [
        "cvm vm run: sev-snp, 2 vCPU(s)",
        "",
        "",
        "12 TPM2_PCR_Extend commands reached the vTPM through 31 SVSM calls",
        "",
        "  sha1 PCR  7 0000000000000000…  prediction DIFFERS, replayed log equal",
        "  sha256 PCR  0 d4d4d4d4d4d4d4d4…  prediction DIFFERS, replayed log DIFFERS",
        "  sha256 PCR  7 b2b2b2b2b2b2b2b2…  prediction equal, replayed log DIFFERS",
        "NOT VERIFIED: sha1 PCR 7 differs from the prediction; sha256 PCR 0 differs from the "
        "prediction; sha256 PCR 0 differs from the replayed log; sha256 PCR 7 differs from the "
        "replayed log",
        "boot time 1012 ms (launch 12, svsm 1000)",
    ]


def test_a_pcr_not_read_is_told_and_the_next_one_compared() -> None:
    trace = _good()
    _one_pcr_not_read(trace)
    assert [line for line in trace.render().splitlines() if " PCR " in line] == [
        "  sha1 PCR  7 5151515151515151…  prediction equal, replayed log equal",
        "  sha256 PCR  0 not read from the vTPM",
        "  sha256 PCR  7 b2b2b2b2b2b2b2b2…  prediction equal, replayed log equal",
        "NOT VERIFIED: sha256 PCR 0 was not read from the vTPM",
    ]


def test_a_trace_never_read_tells_no_pcr_equal() -> None:
    """A boot refused at launch never read the vTPM: no PCR is told equal to anything."""
    trace = VmTrace("plain", 1)
    trace.predicted = {"sha256": {7: B}}
    trace.add("host", "launched", "a plain VM (no launch measurement)")
    assert trace.compared() == {7: (False, False)}
    assert trace.render().splitlines() == [
        "cvm vm run: plain, 1 vCPU(s)",
        "",
        "         host  launched  a plain VM (no launch measurement)",
        "",
        "0 TPM2_PCR_Extend commands reached the vTPM through the host's vTPM device",
        "",
        "  sha256 PCR  7 not read from the vTPM",
        "NOT VERIFIED: sha256 PCR 7 was not read from the vTPM; the workload did not run",
        "boot time 0 ms ()",
    ]


def test_the_comparison_is_per_bank_and_pcr() -> None:
    predicted = {"sha256": {7: B, 11: C}}
    assert compare_pcrs(predicted, {"sha256": {7: B, 11: C}}, {"sha256": {7: B}}, "sha256") == {
        7: (True, True), 11: (True, False)}
    assert compare_pcrs(predicted, {"sha1": {7: B}}, {"sha1": {7: B}}, "sha256") == {
        7: (False, False), 11: (False, False)}
    assert compare_pcrs(predicted, {}, {}, "sha1") == {}
    assert compare_pcrs(predicted, {"sha256": {7: B, 11: C}}, {}, "sha256") == {
        7: (True, False), 11: (True, False)}  # a log without the bank replays to nothing
    assert pcrs_match(predicted, {"sha256": {7: B, 11: C}}, {"sha256": {7: B, 11: C}})
    assert not pcrs_match(predicted, {"sha256": {7: B, 11: C}}, {"sha256": {7: B, 11: D}})
    assert not pcrs_match({"sha256": {}}, {"sha256": {7: B}}, {"sha256": {7: B}})
    assert workload_round_trip(WORKLOAD) and not workload_round_trip(None)
    assert not workload_round_trip(replace(WORKLOAD, round_trip=False))


def test_the_json_holds_the_whole_run_and_no_secret() -> None:
    trace = _good()
    trace.launch_measurement, trace.predicted_measurement = b"\x01\x02", b"\x01\x03"
    trace.stages, trace.extends, trace.svsm_calls = ("firmware", "uki", "linux"), 3, 9
    trace.timings = {"launch": 0.0000014, "svsm": 1.25}
    trace.add("SVSM", "started", "the guest OS at VMPL1")
    trace.steps.append(TraceStep("firmware", "measured", "EV_SEPARATOR: separator", 7, "aa"))
    assert trace.secrets() == {}
    assert trace.to_json() == {
        "mode": "sev-snp", "vcpus": 2, "ok": True, "stages": ["firmware", "uki", "linux"],
        "launch_measurement": "0102", "predicted_measurement": "0103",
        "launch_accepted": True,
        "steps": [{"actor": "SVSM", "verb": "started", "subject": "the guest OS at VMPL1"},
                  {"actor": "firmware", "verb": "measured",
                   "subject": "EV_SEPARATOR: separator", "pcr": 7, "sha256": "aa"}],
        "pcrs": {"sha256": {"0": A.hex(), "7": B.hex(), "8": C.hex()},
                 "sha1": {"7": S.hex(), "8": S.hex()}},
        "replayed": {"sha256": {"0": A.hex(), "7": B.hex(), "8": C.hex()},
                     "sha1": {"7": S.hex()}},
        "predicted": {"sha256": {"0": A.hex(), "7": B.hex()}, "sha1": {"7": S.hex()}},
        "pcrs_match_prediction_and_replay": True, "failures": [], "refused": None,
        "unsealed": True,
        "root": {"token": 0, "keyslot": 1, "policy": "signed", "pcrs": [7, 11],
                 "pcr_bank": "sha256", "luks_uuid": ROOT.luks_uuid,
                 "files": ["/srv/data/README"]},
        "workload": {"path": "/srv/data/log", "size": 4096, "round_trip": True,
                     "data_sha256": "ab" * 32},
        "vtpm_extends": 3, "svsm_calls": 9,
        "timings_s": {"launch": 0.000001, "svsm": 1.25},
    }
    empty = VmTrace("plain", 1).to_json()
    assert (empty["launch_measurement"], empty["predicted_measurement"]) == (None, None)
    assert (empty["root"], empty["workload"], empty["unsealed"]) == (None, None, False)


def test_the_pcrs_are_listed_in_order() -> None:
    trace = VmTrace("plain", 1)
    trace.pcrs = {"sha256": {11: C, 0: A, 7: B}}
    assert list(trace.to_json()["pcrs"]["sha256"]) == ["0", "7", "11"]
