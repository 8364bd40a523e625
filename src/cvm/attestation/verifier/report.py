"""Verifying an attestation report against a verified VCEK chain (is it authentic?).

AMD 56860 Table 22 (report fields, signed region 0x000..0x29F, SIGNATURE_ALGO 1 = ECDSA
P-384 with SHA-384, SIGNER_INFO) and AMD 57230 VCEK extensions (the VCEK is bound to one chip and
one TCB). A report is authentic for a chain when:

* it parses strictly, with the TCB layout of the chain's product;
* it says it is signed (MASK_CHIP_KEY clear) by a VCEK with ECDSA P-384/SHA-384;
* REPORTED_TCB equals the VCEK's TCB extensions (blSPL, teeSPL, snpSPL, ucodeSPL, fmcSPL)
  and CHIP_ID equals the VCEK's hwID (first 8 bytes, rest zero, on Turin) — snpguest's
  ``verify attestation`` checks, which make a VCEK for another chip or TCB useless;
* a version 3+ report's CPUID family belongs to the chain's product;
* the signature over the signed region verifies under the VCEK key.
"""

from __future__ import annotations

from cvm.attestation.verifier.chain import VerifiedChain
from cvm.crypto import amd_ecdsa
from cvm.errors import ChainError, SignatureError
from cvm.formats.snp.attestation_report import (
    FAMILY_ZEN3_ZEN4,
    FAMILY_ZEN5,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    AttestationReport,
)
from cvm.formats.snp.signer_info import SigningKey

PRODUCT_FAMILIES = {"Milan": FAMILY_ZEN3_ZEN4, "Genoa": FAMILY_ZEN3_ZEN4, "Turin": FAMILY_ZEN5}


def check_binding(report: AttestationReport, chain: VerifiedChain) -> None:
    """The report belongs to the chip and TCB the VCEK certificate names."""
    claims = chain.claims
    if report.reported_tcb != claims.tcb:
        raise ChainError(
            f"the VCEK is for TCB {claims.tcb}, the report's REPORTED_TCB is "
            f"{report.reported_tcb}"
        )
    hw_id = claims.hw_id
    if report.chip_id[: len(hw_id)] != hw_id or any(report.chip_id[len(hw_id) :]):
        raise ChainError(
            f"the VCEK is for chip {hw_id.hex()}, the report's CHIP_ID is {report.chip_id.hex()}"
        )
    family = PRODUCT_FAMILIES.get(chain.product)
    if report.version >= 3 and report.cpuid_fam_id and family != report.cpuid_fam_id:
        raise ChainError(
            f"the report's CPUID family {report.cpuid_fam_id:#x} is not {chain.product}'s"
        )


def verify_report(data: bytes, chain: VerifiedChain) -> AttestationReport:
    """Parse and verify a report (0x4A0 bytes) under a verified chain; return it."""
    report = AttestationReport.from_bytes(data, tcb_layout=chain.claims.tcb.layout)
    if report.signer_info.mask_chip_key:
        raise SignatureError("the report is not signed (MASK_CHIP_KEY is set)")
    if report.signer_info.signing_key is not SigningKey.VCEK:
        raise SignatureError(
            f"the report is signed by the {report.signer_info.signing_key.name} key; "
            "only VCEK chains are supported"
        )
    if report.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise SignatureError(
            f"unknown report signature algorithm {report.signature_algo} (1 = ECDSA P-384)"
        )
    check_binding(report, chain)
    amd_ecdsa.verify(
        chain.vcek_public_key,
        AttestationReport.signed_region(data),
        report.signature_r,
        report.signature_s,
    )
    return report
