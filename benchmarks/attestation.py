"""Attestation throughput: reports signed per second, full appraisals per second.

Usage: ``python benchmarks/attestation.py [--json] [--seconds 2]``

Baseline: one bare ECDSA P-384/SHA-384 verification of a report's signed bytes through
``cryptography`` (OpenSSL) with a ready DER signature and public key — the one primitive a
verifier cannot avoid. Measured, as medians over many runs:

* signing: one report signed by the chip's VCEK (AMD-encoded R, S; RFC 6979) and
  serialised — the work the emulated PSP does per MSG_REPORT_REQ;
* full appraisal: parse the report strictly, check the (cached) ARK -> ASK -> VCEK chain
  and its validity window, bind REPORTED_TCB/CHIP_ID to the VCEK, verify the signature,
  and validate every reference value — ``Verifier.appraise`` as a relying party calls it;
* cold appraisal: the same with an empty chain cache (three RSA-4096 PSS verifications).

Goal: a full (warm) appraisal within 3x the bare ECDSA verification.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cvm.amd import DEFAULT_SEED, Vendor, derive_vcek_private_key
from cvm.attestation.verifier import Evidence, ReferenceValues, TrustRoots, Verifier
from cvm.crypto import amd_ecdsa
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.tcb_version import TcbVersion
from timing import argument_parser, median, print_figures

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def run(seconds: float) -> dict[str, float]:
    vendor = Vendor("Milan", DEFAULT_SEED, clock=lambda: ISSUED)
    chip = vendor.manufacture_chip(0)
    tcb = TcbVersion(boot_loader=4, tee=0, snp=22, microcode=213)
    key = derive_vcek_private_key(chip.chip_secret, tcb, "Milan")
    template = AttestationReport(
        version=3, policy=GuestPolicy(smt=True), cpuid_fam_id=0x19, cpuid_mod_id=0x01,
        chip_id=chip.chip_id, current_tcb=tcb, reported_tcb=tcb, committed_tcb=tcb,
        launch_tcb=tcb, measurement=hashlib.sha384(b"firmware").digest(),
        report_data=hashlib.sha512(b"nonce").digest(),
    )

    def sign() -> bytes:
        r, s = amd_ecdsa.sign(key, template.signed_bytes())
        return template.with_signature(r, s).to_bytes()

    report = sign()
    evidence = Evidence(
        report, vendor.vcek_certificate(chip.chip_id, tcb), vendor.ask_certificate,
        vendor.ark_certificate,
    )
    reference = ReferenceValues(
        measurement=template.measurement, report_data=template.report_data, vmpl=0,
        minimum_tcb=tcb, chip_id=chip.chip_id,
    )
    roots = TrustRoots.of([vendor.trust_anchor()], "emulated")
    verifier = Verifier(roots, clock=lambda: NOW)

    parsed = AttestationReport.from_bytes(report)
    der_signature = encode_dss_signature(
        amd_ecdsa.decode_component(parsed.signature_r),
        amd_ecdsa.decode_component(parsed.signature_s),
    )
    public = key.public_key()
    message = parsed.signed_bytes()
    algorithm = ec.ECDSA(hashes.SHA384())

    bare = median(lambda: public.verify(der_signature, message, algorithm), seconds=seconds,
                  at_least=20)
    signing = median(sign, seconds=seconds, at_least=20)
    verifier.appraise(evidence, reference)  # fill the chain cache
    full = median(lambda: verifier.appraise(evidence, reference), seconds=seconds, at_least=20)
    cold = median(lambda: Verifier(roots, clock=lambda: NOW).appraise(evidence, reference),
                  seconds=seconds, at_least=20)
    bare_us, sign_us, full_us, cold_us = bare.us, signing.us, full.us, cold.us
    return {
        "bare_ecdsa_p384_verify_us": round(bare_us, 1),
        "bare_ecdsa_p384_verifies_per_s": round(1e6 / bare_us, 1),
        "report_sign_us": round(sign_us, 1),
        "reports_signed_per_s": round(1e6 / sign_us, 1),
        "full_appraisal_us": round(full_us, 1),
        "full_appraisals_per_s": round(1e6 / full_us, 1),
        "cold_appraisal_us": round(cold_us, 1),
        "ratio_full_appraisal_to_bare_verify": round(full_us / bare_us, 2),
        "ratio_goal": 3.0,
        "samples": float(min(bare.samples, signing.samples, full.samples, cold.samples)),
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    results = run(args.seconds)
    print_figures(results, as_json=args.json, line="{name:40} {value}")


if __name__ == "__main__":
    main()
