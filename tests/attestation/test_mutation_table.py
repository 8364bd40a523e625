"""Mutation table: each report field changed gives exactly its own failure.

Re-signed by the chip (the PSP would sign whatever it reports), a changed field must be
caught by the check responsible for it — a validation finding naming the claim, or a
verification error — and by nothing else. Not re-signed, any change breaks the signature.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cvm.errors import ChainError, FormatError, SignatureError
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.platform_info import PlatformInfo
from cvm.formats.snp.signer_info import SignerInfo, SigningKey
from cvm.formats.snp.tcb_version import TcbVersion

LOWER = TcbVersion(boot_loader=4, tee=0, snp=21, microcode=213)

# field -> (new value, expected outcome): a finding's claim (or the claims, in order), an error
# class, or "accepted". A running TCB below REPORTED_TCB is also a finding of its own.
MUTATIONS: dict[str, tuple[object, object]] = {
    "guest_svn": (1, "guest_svn"),
    "policy": (GuestPolicy(smt=True, debug=True), "policy.debug"),
    "family_id": (b"f" * 16, "family_id"),
    "image_id": (b"i" * 16, "image_id"),
    "vmpl": (1, "vmpl"),
    "signature_algo": (2, SignatureError),
    "current_tcb": (LOWER, ("current_tcb", "current_tcb_vs_reported_tcb")),
    "platform_info": (PlatformInfo(), "accepted"),
    "signer_info": (SignerInfo(signing_key=SigningKey.VLEK), SignatureError),
    "report_data": (bytes(64), "report_data"),
    "measurement": (bytes(48), "measurement"),
    "host_data": (bytes(32), "host_data"),
    "id_key_digest": (bytes(48), "id_key_digest"),
    "author_key_digest": (bytes(48), "author_key_digest"),
    "report_id": (bytes(32), "accepted"),
    "report_id_ma": (bytes(32), "accepted"),
    "reported_tcb": (LOWER, ChainError),
    "cpuid_fam_id": (0x1A, ChainError),
    "cpuid_mod_id": (0x11, "accepted"),
    "cpuid_step": (0x02, "accepted"),
    "chip_id": (bytes(range(64)), ChainError),
    "committed_tcb": (LOWER, ("committed_tcb", "committed_tcb_vs_reported_tcb")),
    "current_build": (0, "accepted"),
    "current_minor": (54, "firmware_version"),
    "current_major": (0, "firmware_version"),
    "committed_build": (1, "accepted"),
    "committed_minor": (1, "accepted"),
    "committed_major": (2, "accepted"),
    "launch_tcb": (LOWER, ("launch_tcb", "launch_tcb_vs_reported_tcb")),
}
NOT_MUTATED = {"version", "signature_r", "signature_s", "launch_mit_vector", "current_mit_vector"}


def test_table_covers_every_field(emulated: Any) -> None:
    names = {field.name for field in dataclasses.fields(emulated.report)}
    assert set(MUTATIONS) == names - NOT_MUTATED


@pytest.mark.parametrize("field", sorted(MUTATIONS))
def test_resigned_mutation_gives_exactly_its_failure(emulated: Any, field: str) -> None:
    value, expected = MUTATIONS[field]
    mutated = emulated.report.replace(**{field: value})
    assert mutated != emulated.report
    # The chip signs with the VCEK of the TCB it reports; the relying party holds the
    # certificates of the chip at the TCB it knows.
    evidence = dataclasses.replace(
        emulated.evidence(emulated.sign(emulated.report)), report=emulated.sign(mutated)
    )
    if isinstance(expected, type):
        with pytest.raises(expected):
            emulated.verifier.verify(evidence)
        return
    verified = emulated.verifier.verify(evidence)
    findings = emulated.verifier.validate(verified.report, emulated.reference)
    claims = [finding.claim for finding in findings]
    if isinstance(expected, tuple):
        assert claims == list(expected)
    else:
        assert claims == ([] if expected == "accepted" else [expected])


@pytest.mark.parametrize("field", sorted(MUTATIONS))
def test_unsigned_mutation_breaks_the_signature(emulated: Any, field: str) -> None:
    value, _ = MUTATIONS[field]
    signed = emulated.report.replace(**{field: value}).to_bytes()
    original = emulated.evidence(emulated.sign(emulated.report))
    forged = dataclasses.replace(original, report=signed[:0x2A0] + original.report[0x2A0:])
    with pytest.raises((SignatureError, ChainError, FormatError)):
        emulated.verifier.verify(forged)


def test_unmodified_report_has_no_findings(emulated: Any) -> None:
    verified = emulated.verifier.verify(emulated.evidence(emulated.sign(emulated.report)))
    assert emulated.verifier.validate(verified.report, emulated.reference) == ()
