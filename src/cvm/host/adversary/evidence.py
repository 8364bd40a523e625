"""Attacks on evidence and on the guest's channel to the PSP.

The guest's messages to the PSP (report and key requests) cross host pages: AES-256-GCM under a
VMPCK only the guest and the PSP hold, with sequence numbers as IVs (SEV-SNP ABI 56860 §7). The
evidence the guest sends out crosses the host's network: the report is signed by the VCEK, whose
chain ends at AMD's root, and binds the relying party's nonce in REPORT_DATA. Without SNP there
are no reports and no channel: these attacks do not apply.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from cvm.errors import IntegrityError, WrongKeyError
from cvm.host.adversary.lab import Lab
from cvm.host.adversary.threat import (
    Family,
    Mechanism,
    Observed,
    Verdict,
    blocked,
    by,
    declare,
    na,
    not_applicable,
    succeeded,
)
from cvm.host.launch import GuestRequestRelay

REPORT_SIGNATURE_OFFSET = 0x2A0
NOT_SNP = "no SNP reports or guest messages without SEV-SNP"
NO_REPORTS = na(NOT_SNP)


def _relay(lab: Lab) -> GuestRequestRelay | None:
    return next((h for h in lab.host.exit_hooks if isinstance(h, GuestRequestRelay)), None)


def replay_evidence(lab: Lab) -> Observed:
    if not lab.mode.snp:
        return not_applicable(NOT_SNP)
    _, old = lab.attest()
    fresh, _ = lab.attest()
    release = lab.appraise(old, fresh)
    if release.released:
        return succeeded("the relying party accepted the replayed report")
    return blocked(Mechanism.ATTESTATION, f"refused: {', '.join(release.claims)}")


def forge_report(lab: Lab) -> Observed:
    if not lab.mode.snp:
        return not_applicable(NOT_SNP)
    nonce, genuine = lab.attest()
    report = bytearray(genuine.report)
    report[0x90:0xC0] = hashlib.sha384(b"the host's own firmware").digest()
    release = lab.appraise(replace(genuine, report=bytes(report)), nonce)
    if release.released:
        return succeeded("the relying party accepted the forged report")
    if "signature" in release.claims or "chain" in release.claims:
        return blocked(Mechanism.VCEK_CHAIN, release.detail)
    return blocked(Mechanism.ATTESTATION, f"refused: {', '.join(release.claims)}")


AUTHENTICATION_ERRORS = tuple(f"{error.__name__}: " for error in (IntegrityError, WrongKeyError))


def refused_by_channel(outcome: str, delivered: bool, detail: str) -> Observed:
    """The guest's refusal of a message the host forged or replayed: the VMPCK's doing only
    when the host's message reached the guest and the guest's channel found it not authentic;
    a refusal for anything else (no such message delivered, the PSP's error) names no
    mechanism, so it matches no expectation."""
    if delivered and outcome.startswith(AUTHENTICATION_ERRORS):
        return blocked(Mechanism.VMPCK, detail)
    if not delivered:
        return Observed(Verdict.BLOCKED, f"the host's message never reached the guest: {detail}")
    return Observed(Verdict.BLOCKED, f"refused, but not as inauthentic: {detail}")


def tamper_guest_message(lab: Lab) -> Observed:
    relay = _relay(lab)
    if not lab.mode.snp or relay is None:
        return not_applicable(NOT_SNP)
    original = relay.forward
    tampered: list[bytes] = []

    def forward(handle: int, request: bytes) -> tuple[int, bytes | None]:
        status, response = original(handle, request)
        if response is None:
            return status, response
        flipped = bytearray(response)
        flipped[0x60] ^= 1  # first byte of the encrypted payload
        tampered.append(bytes(flipped))
        return status, tampered[-1]

    relay.forward = forward  # type: ignore[method-assign]
    outcome = lab.guest_request_report()
    if outcome == "ok":
        return succeeded("the guest accepted the tampered response")
    return refused_by_channel(outcome, bool(tampered), outcome)


def replay_guest_message(lab: Lab) -> Observed:
    relay = _relay(lab)
    if not lab.mode.snp or relay is None:
        return not_applicable(NOT_SNP)
    first = lab.guest_request_report()
    if first != "ok" or not relay.log or relay.log[-1][1] is None:
        return not_applicable(f"no genuine exchange to replay ({first})")
    old_request, old_response = relay.log[-1]
    handle = next(iter(relay.handles.values()))
    status, _ = relay.forward(handle, old_request)
    original = relay.forward
    replayed: list[bytes] = []

    def forward(handle: int, request: bytes) -> tuple[int, bytes | None]:
        original(handle, request)
        replayed.append(request)
        return 0, old_response

    relay.forward = forward  # type: ignore[method-assign]
    outcome = lab.guest_request_report()
    if outcome == "ok":
        return succeeded("the guest accepted an old response")
    psp = f"the PSP answered the replayed request with status {status:#x}"
    return refused_by_channel(outcome, bool(replayed), f"{psp}; the guest: {outcome}")


# -- the declarations: the expected outcome in plain, sev, sev-es and sev-snp -------------------
ATTACKS = (
    declare(
        "replay-evidence", Family.EVIDENCE,
        "answer a fresh challenge with evidence recorded from an earlier one",
        (NO_REPORTS, NO_REPORTS, NO_REPORTS, by(Mechanism.ATTESTATION)),
        replay_evidence,
    ),
    declare(
        "forge-report", Family.EVIDENCE,
        "change the measurement in a genuine report and send it on (signature kept)",
        (NO_REPORTS, NO_REPORTS, NO_REPORTS, by(Mechanism.VCEK_CHAIN)),
        forge_report,
    ),
    declare(
        "tamper-guest-message", Family.EVIDENCE,
        "flip one bit of the PSP's encrypted response before the guest reads it",
        (NO_REPORTS, NO_REPORTS, NO_REPORTS, by(Mechanism.VMPCK)),
        tamper_guest_message,
    ),
    declare(
        "replay-guest-message", Family.EVIDENCE,
        "send the PSP a guest's old request again, and the guest an old response",
        (NO_REPORTS, NO_REPORTS, NO_REPORTS, by(Mechanism.VMPCK)),
        replay_guest_message,
    ),
)
