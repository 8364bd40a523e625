"""Validating an authentic report against the relying party's policy (is it acceptable?).

The claims are the report fields of AMD 56860 Table 22 and its guest policy bits; the rules
follow go-sev-guest ``validate.Options`` and snpguest ``verify attestation``: exact
reference values (measurement, REPORT_DATA, HOST_DATA, family and image ID, ID and author
key digests, CHIP_ID, VMPL), minimum versions (every TCB field component-wise, guest SVN,
firmware version) and policy bits (debug and migration agent refused unless allowed; SMT,
single socket and AES-256-XTS checked when required).

One rule holds whatever the reference values: the TCB the report was signed at (REPORTED_TCB,
the VCEK's) is never above what the chip runs, has committed or launched the guest with. The
host may make the PSP report an older TCB than it runs (SNP_CONFIG, AMD 56860, so that guests
keep their VCEK while an update rolls out), never a newer one; a CURRENT_TCB, COMMITTED_TCB or
LAUNCH_TCB below REPORTED_TCB means the report claims a security level the platform lacks, and
is a finding of its own (``<field>_vs_reported_tcb``).

:func:`validate` never raises for a bad report: it returns every :class:`Finding` (claim,
expected, actual) so the caller can say precisely why evidence was refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cvm.errors import Finding
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.tcb_version import TcbVersion

_EXACT_BYTES = (
    "measurement", "report_data", "host_data", "family_id", "image_id", "id_key_digest",
    "author_key_digest", "chip_id",
)
_TCB_FIELDS = ("current_tcb", "committed_tcb", "reported_tcb", "launch_tcb")
_RUNNING_TCB_FIELDS = ("current_tcb", "committed_tcb", "launch_tcb")


@dataclass(frozen=True)
class ReferenceValues:
    """What the relying party accepts; ``None`` means "not checked"."""

    measurement: bytes | Sequence[bytes] | None = None
    report_data: bytes | None = None
    host_data: bytes | None = None
    family_id: bytes | None = None
    image_id: bytes | None = None
    id_key_digest: bytes | None = None
    author_key_digest: bytes | None = None
    chip_id: bytes | None = None
    vmpl: int | None = None
    minimum_tcb: TcbVersion | None = None
    minimum_guest_svn: int | None = None
    minimum_firmware: tuple[int, int] | None = None
    allow_debug: bool = False
    allow_migration_agent: bool = False
    require_no_smt: bool = False
    require_single_socket: bool = False
    require_aes_256_xts: bool = False


# Reference values a relying party may leave out, and how a person calls them.
_OPTIONAL_CLAIMS = (
    ("measurement", "MEASUREMENT"), ("report_data", "REPORT_DATA"), ("host_data", "HOST_DATA"),
    ("minimum_tcb", "minimum TCB"), ("id_key_digest", "ID key digest"),
    ("author_key_digest", "author key digest"), ("family_id", "FAMILY_ID"),
    ("image_id", "IMAGE_ID"), ("chip_id", "CHIP_ID"), ("vmpl", "VMPL"),
    ("minimum_guest_svn", "minimum guest SVN"), ("minimum_firmware", "minimum firmware version"),
)


def unchecked(reference: ReferenceValues) -> tuple[str, ...]:
    """What ``reference`` does not check, by name ("MEASUREMENT", "minimum TCB", ...)."""
    return tuple(label for name, label in _OPTIONAL_CLAIMS if getattr(reference, name) is None)


def _accepted(expected: bytes | Sequence[bytes]) -> tuple[bytes, ...]:
    return (expected,) if isinstance(expected, bytes) else tuple(expected)


def _exact_findings(report: AttestationReport, reference: ReferenceValues) -> list[Finding]:
    findings = []
    for name in _EXACT_BYTES:
        expected = getattr(reference, name)
        if expected is None:
            continue
        actual: bytes = getattr(report, name)
        accepted = _accepted(expected)
        if actual not in accepted:
            shown = " or ".join(value.hex() for value in accepted)
            findings.append(Finding(name, shown, actual.hex()))
    if reference.vmpl is not None and report.vmpl != reference.vmpl:
        findings.append(Finding("vmpl", str(reference.vmpl), str(report.vmpl)))
    return findings


def _version_findings(report: AttestationReport, reference: ReferenceValues) -> list[Finding]:
    findings = []
    if reference.minimum_tcb is not None:
        for name in _TCB_FIELDS:
            actual: TcbVersion = getattr(report, name)
            if not actual.at_least(reference.minimum_tcb):
                findings.append(
                    Finding(name, f"at least {reference.minimum_tcb}", str(actual),
                            "the firmware is older than the policy allows (rollback?)")
                )
    for name in _RUNNING_TCB_FIELDS:
        running: TcbVersion = getattr(report, name)
        if not running.at_least(report.reported_tcb):
            findings.append(
                Finding(f"{name}_vs_reported_tcb", f"at least REPORTED_TCB {report.reported_tcb}",
                        str(running), "the report claims a TCB the platform does not run")
            )
    if reference.minimum_guest_svn is not None and report.guest_svn < reference.minimum_guest_svn:
        findings.append(
            Finding("guest_svn", f"at least {reference.minimum_guest_svn}", str(report.guest_svn))
        )
    if reference.minimum_firmware is not None:
        actual_version = (report.current_major, report.current_minor)
        if actual_version < reference.minimum_firmware:
            major, minor = reference.minimum_firmware
            findings.append(
                Finding("firmware_version", f"at least {major}.{minor}",
                        f"{actual_version[0]}.{actual_version[1]}")
            )
    return findings


def _policy_findings(report: AttestationReport, reference: ReferenceValues) -> list[Finding]:
    policy = report.policy
    rules = [
        ("policy.debug", not reference.allow_debug and policy.debug, "0 (debug off)", "1",
         "a debug guest's memory can be decrypted by the host"),
        ("policy.migrate_ma", not reference.allow_migration_agent and policy.migrate_ma,
         "0 (no migration agent)", "1", ""),
        ("policy.smt", reference.require_no_smt and policy.smt, "0", "1", ""),
        ("policy.single_socket", reference.require_single_socket and not policy.single_socket,
         "1", "0", ""),
        ("policy.mem_aes_256_xts", reference.require_aes_256_xts and not policy.mem_aes_256_xts,
         "1", "0", ""),
    ]
    return [Finding(claim, expected, actual, hint) for claim, bad, expected, actual, hint in rules
            if bad]


def validate(report: AttestationReport, reference: ReferenceValues) -> tuple[Finding, ...]:
    """Every way ``report`` falls short of ``reference`` (empty when acceptable)."""
    return (
        *_exact_findings(report, reference),
        *_version_findings(report, reference),
        *_policy_findings(report, reference),
    )
