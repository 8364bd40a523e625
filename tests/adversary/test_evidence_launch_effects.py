"""The attacks on evidence, on the guest's channel to the PSP and at launch, one cell at a time
on a freshly booted VM: each outcome as expected, with the detail it reports, and the proof
that the attack acted — the report the relying party was shown, the response the guest read,
the firmware and reference values the host launched with — and that what stopped it is the
mechanism it names."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from cvm.hardware.vm import Mode
from cvm.host.adversary import evidence, launch
from cvm.host.adversary.boot_files import manifest
from cvm.host.adversary.catalog import by_name
from cvm.host.adversary.lab import Evidence, Release
from cvm.host.adversary.launch import FIRMWARE_BIT, judge_release
from cvm.host.adversary.threat import MODES, Attack, Mechanism, Observed, Verdict
from cvm.host.launch import GuestRequestRelay
from cvm.scenarios.boot_lab import BootLab

ATTACKS = [*evidence.ATTACKS, *launch.ATTACKS]
Labs = Callable[[Mode], BootLab]
Appraisal = tuple[Evidence, bytes, Release]

LAB_SEED = 60  # the lab bundles' and the VMs' randomness (tests/adversary/conftest.py)

UNGATED = "the owner's secret was released with nothing to appraise"
# What each cell reports, the same in every mode unless the mode is named.
DETAILS = {
    "replay-evidence": evidence.NOT_SNP,
    "replay-evidence/sev-snp": "refused: report_data",
    "forge-report": evidence.NOT_SNP,
    "forge-report/sev-snp": "ECDSA P-384 signature does not verify",
    "tamper-guest-message": evidence.NOT_SNP,
    "tamper-guest-message/sev-snp": "IntegrityError: AES-256-GCM authentication failed",
    "replay-guest-message": evidence.NOT_SNP,
    "replay-guest-message/sev-snp": "the PSP answered the replayed request with status 0x16; "
                                    "the guest: IntegrityError: response header is seqno 4 "
                                    "REPORT_RSP VMPCK0 version 1, expected seqno 6 REPORT_RSP "
                                    "VMPCK0 version 1",
    "tamper-firmware": UNGATED,
    "tamper-firmware/sev-snp": "refused: measurement",
    "forge-reference-values": UNGATED,
    "forge-reference-values/sev-snp": "refused: measurement",
    "debug-policy/plain": "a plain VM has no guest policy: the host reads it anyway",
    "debug-policy": UNGATED,
    "debug-policy/sev-snp": "refused: policy.debug",
    "psp-rollback/plain": "a plain VM does not involve the PSP",
    "psp-rollback": UNGATED,
    "psp-rollback/sev-snp": "refused: current_tcb, committed_tcb, reported_tcb, launch_tcb",
}


@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_each_attack_as_expected_in_each_mode(attack: Attack, mode: Mode, labs: Labs) -> None:
    observed = attack.perform(labs(mode))
    assert observed.matches(attack.expected(mode)), (str(observed), observed.detail)
    assert observed.detail == DETAILS.get(f"{attack.name}/{mode.value}",
                                          DETAILS[attack.name])


def _perform(lab: BootLab, name: str) -> Observed:
    attack = by_name(name)
    observed = attack.perform(lab)
    assert observed.matches(attack.expected(lab.mode)), (name, str(observed), observed.detail)
    return observed


def _watch_appraisals(lab: BootLab) -> list[Appraisal]:
    seen: list[Appraisal] = []
    appraise = lab.appraise

    def watched(shown: Evidence, nonce: bytes) -> Release:
        seen.append((shown, nonce, appraise(shown, nonce)))
        return seen[-1][2]

    lab.appraise = watched  # type: ignore[method-assign,assignment]
    return seen


def _watch_attestations(lab: BootLab) -> list[tuple[bytes, Evidence]]:
    seen: list[tuple[bytes, Evidence]] = []
    attest = lab.attest

    def watched() -> tuple[bytes, Evidence]:
        seen.append(attest())
        return seen[-1]

    lab.attest = watched  # type: ignore[method-assign]
    return seen


def _relay(lab: BootLab) -> GuestRequestRelay:
    return next(h for h in lab.host.exit_hooks if isinstance(h, GuestRequestRelay))


# -- evidence -----------------------------------------------------------------------------------
def test_replay_evidence_shows_the_old_report_for_the_fresh_nonce(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    rounds = _watch_attestations(lab)
    appraisals = _watch_appraisals(lab)
    _perform(lab, "replay-evidence")
    (old_nonce, old), (fresh_nonce, fresh) = rounds
    [(shown, nonce, release)] = appraisals
    assert old_nonce != fresh_nonce and old.report != fresh.report
    assert shown == old and nonce == fresh_nonce
    assert release.claims == ("report_data",)
    # the same report with the nonce it was made for is accepted: only the replay is refused
    assert lab.appraise(old, old_nonce).released


def test_forge_report_changes_only_the_measurement_of_a_genuine_report(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    rounds = _watch_attestations(lab)
    appraisals = _watch_appraisals(lab)
    observed = _perform(lab, "forge-report")
    [(nonce, genuine)] = rounds
    [(shown, shown_nonce, release)] = appraisals
    forged = bytearray(genuine.report)
    forged[0x90:0xC0] = hashlib.sha384(b"the host's own firmware").digest()
    assert shown == replace(genuine, report=bytes(forged)) and shown_nonce == nonce
    assert genuine.report[0x90:0xC0] != forged[0x90:0xC0]
    assert release.claims == ("signature",) and observed.detail == release.detail
    assert lab.appraise(genuine, nonce).released  # the genuine report passes


def test_forge_report_refused_for_no_signature_names_the_appraisal(
        labs: Labs, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = labs(Mode.SEV_SNP)
    monkeypatch.setattr(lab, "appraise", lambda shown, nonce: Release(
        False, True, ("measurement", "policy.debug"), "measurement differs"))
    for name in ("forge-report", "replay-evidence"):
        assert _perform_any(lab, name) == Observed(
            Verdict.BLOCKED, "refused: measurement, policy.debug", Mechanism.ATTESTATION)
    monkeypatch.setattr(lab, "appraise", lambda shown, nonce: Release(
        False, True, ("chain",), "the chain ends elsewhere"))
    observed = _perform_any(lab, "forge-report")
    assert observed == Observed(Verdict.BLOCKED, "the chain ends elsewhere",
                                Mechanism.VCEK_CHAIN)
    monkeypatch.setattr(lab, "appraise", lambda shown, nonce: Release(True, True))
    assert _perform_any(lab, "forge-report") == Observed(
        Verdict.SUCCEEDED, "the relying party accepted the forged report")
    assert _perform_any(lab, "replay-evidence") == Observed(
        Verdict.SUCCEEDED, "the relying party accepted the replayed report")


def _perform_any(lab: BootLab, name: str) -> Observed:
    return by_name(name).perform(lab)


def test_tamper_guest_message_flips_the_psps_genuine_response(labs: Labs,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    lab = labs(Mode.SEV_SNP)
    relay = _relay(lab)
    genuine: list[bytes] = []
    answer = relay.psp.snp_guest_request

    def watched(handle: int, request: bytes) -> bytes:
        genuine.append(answer(handle, request))
        return genuine[-1]

    monkeypatch.setattr(relay.psp, "snp_guest_request", watched)
    _perform(lab, "tamper-guest-message")
    _, given = relay.log[-1]  # what the host wrote to the guest's response page
    flipped = bytearray(genuine[-1])  # the PSP answered: the guest refused, not the PSP
    flipped[0x60] ^= 1
    assert given == bytes(flipped)


def test_a_tampered_response_the_guest_accepts_is_reported(labs: Labs,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    lab = labs(Mode.SEV_SNP)
    monkeypatch.setattr(lab, "guest_request_report", lambda: "ok")
    assert _perform_any(lab, "tamper-guest-message") == Observed(
        Verdict.SUCCEEDED, "the guest accepted the tampered response")
    assert _perform_any(lab, "replay-guest-message") == Observed(
        Verdict.SUCCEEDED, "the guest accepted an old response")


def test_replay_guest_message_resends_the_old_request_and_response(
        labs: Labs, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = labs(Mode.SEV_SNP)
    relay = _relay(lab)
    asked: list[tuple[bytes, bytes | None]] = []
    answer = relay.psp.snp_guest_request

    def watched(handle: int, request: bytes) -> bytes:
        asked.append((request, None))
        asked[-1] = (request, answer(handle, request))
        return asked[-1][1] or b""

    monkeypatch.setattr(relay.psp, "snp_guest_request", watched)
    _perform(lab, "replay-guest-message")
    (old_request, old_response), (replayed, refused), (new_request, new_response) = asked
    assert replayed == old_request and refused is None  # the PSP refused the replayed request
    assert new_request != old_request and old_response is not None
    assert new_response is not None  # the guest's new request reached its context in the PSP
    assert relay.log[-1] == (new_request, old_response)  # the guest was given the old response


def test_replay_guest_message_without_a_genuine_exchange(labs: Labs,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    lab = labs(Mode.SEV_SNP)
    monkeypatch.setattr(lab, "guest_request_report", lambda: "KeyError: no")
    assert _perform_any(lab, "replay-guest-message") == Observed(
        Verdict.NOT_APPLICABLE, "no genuine exchange to replay (KeyError: no)")


@pytest.mark.parametrize("log", [[], [(b"request", None)]], ids=["no exchange", "no response"])
def test_replay_guest_message_without_a_response_to_replay(
        log: list[tuple[bytes, bytes | None]], labs: Labs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lab = labs(Mode.SEV_SNP)
    monkeypatch.setattr(lab, "guest_request_report", lambda: "ok")
    _relay(lab).log[:] = log
    assert _perform_any(lab, "replay-guest-message") == Observed(
        Verdict.NOT_APPLICABLE, "no genuine exchange to replay (ok)")


@pytest.mark.parametrize(("name", "exchange"), [("tamper-guest-message", 1),
                                               ("replay-guest-message", 2)])
def test_a_message_that_never_reached_the_guest_is_not_the_vmpcks_doing(
        name: str, exchange: int, labs: Labs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sabotage: the host's relay is gone by the exchange the attack forges; the guest gives
    up, but no forged or old response reached it, so the VMPCK is not credited."""
    lab = labs(Mode.SEV_SNP)
    relay, report, calls = _relay(lab), lab.guest_request_report, [0]

    def sabotaged() -> str:
        calls[0] += 1
        if calls[0] == exchange:
            lab.host.exit_hooks.remove(relay)
        return report()

    monkeypatch.setattr(lab, "guest_request_report", sabotaged)
    observed = _perform_any(lab, name)
    assert observed.verdict is Verdict.BLOCKED and observed.mechanism is None, observed
    assert observed.detail.startswith("the host's message never reached the guest: ")


def test_a_refusal_other_than_inauthentic_is_not_the_vmpcks_doing() -> None:
    assert evidence.refused_by_channel("IntegrityError: bad tag", True, "d") == Observed(
        Verdict.BLOCKED, "d", Mechanism.VMPCK)
    assert evidence.refused_by_channel("WrongKeyError: other key", True, "d") == Observed(
        Verdict.BLOCKED, "d", Mechanism.VMPCK)
    assert evidence.refused_by_channel("StatusError: 0x16", True, "d") == Observed(
        Verdict.BLOCKED, "refused, but not as inauthentic: d")
    assert evidence.refused_by_channel("IntegrityError: bad tag", False, "d") == Observed(
        Verdict.BLOCKED, "the host's message never reached the guest: d")


def test_no_relay_no_guest_message_attacks(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    lab.host.exit_hooks[:] = [h for h in lab.host.exit_hooks
                              if not isinstance(h, GuestRequestRelay)]
    for name in ("tamper-guest-message", "replay-guest-message"):
        assert _perform_any(lab, name) == Observed(Verdict.NOT_APPLICABLE, evidence.NOT_SNP)


# -- launch -------------------------------------------------------------------------------------
def _firmware(lab: BootLab) -> bytes:
    bundle = lab.bundle()
    return (bundle / str(manifest(bundle)["firmware"]["ovmf"])).read_bytes()


@pytest.mark.parametrize("name", ["tamper-firmware", "forge-reference-values"])
@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
def test_the_firmware_launched_has_one_bit_flipped(name: str, mode: Mode, labs: Labs) -> None:
    lab = labs(mode)
    before = _firmware(lab)
    _perform(lab, name)
    after = _firmware(lab)
    assert len(after) == len(before)
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [
        FIRMWARE_BIT // 8]
    assert after[FIRMWARE_BIT // 8] ^ before[FIRMWARE_BIT // 8] == 1 << FIRMWARE_BIT % 8
    assert lab.traces[-1].launch_measurement != lab.traces[0].launch_measurement or (
        mode is not Mode.SEV_SNP)


def test_forge_reference_values_writes_the_measured_digest(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    reference = lab.bundle() / "reference-values.json"
    before = json.loads(reference.read_bytes())
    _perform(lab, "forge-reference-values")
    after = json.loads(reference.read_bytes())
    [digest] = [e["digest"] for e in after["launch"] if e["mode"] == "sev-snp"]
    measured = lab.traces[-1].launch_measurement
    assert measured is not None and digest == measured.hex() != next(
        e["digest"] for e in before["launch"] if e["mode"] == "sev-snp")


@pytest.mark.parametrize("mode", [Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP],
                         ids=["sev", "sev-es", "sev-snp"])
def test_an_honest_launch_is_released(mode: Mode, labs: Labs) -> None:
    """The positive control: without the host's change the same launch releases the secret,
    so the refusals above are the change's doing."""
    release = labs(mode).launch()
    assert release.released and release.gated is (mode is Mode.SEV_SNP)


def test_psp_rollback_reflashes_the_psp(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    assert lab.host.psp is not None
    tcb = lab.host.psp.current_tcb
    _perform(lab, "psp-rollback")
    assert lab.host.psp.current_tcb != tcb


def test_judge_release() -> None:
    assert judge_release(Release(True, True), "x") == Observed(
        Verdict.SUCCEEDED, "the owner's secret was released after an appraisal")
    assert judge_release(Release(True, False), "x") == Observed(Verdict.SUCCEEDED, UNGATED)
    assert judge_release(Release(False, True, (), "a crash"), "x") == Observed(
        Verdict.BLOCKED, "refused, but by no appraisal: a crash")
    assert judge_release(Release(False, True, ("a", "x"), "why"), "x") == Observed(
        Verdict.BLOCKED, "refused: a, x", Mechanism.ATTESTATION)
    assert judge_release(Release(False, True, ("a", "b"), "why"), "x") == Observed(
        Verdict.BLOCKED, "refused for another claim: a, b (why)", Mechanism.ATTESTATION)
