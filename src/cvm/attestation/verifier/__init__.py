"""The SNP verifier: ``verify`` = authentic, ``validate`` = acceptable, ``appraise`` = both.

Imports only ``wire``, ``crypto``, ``formats`` and ``errors``; trust roots arrive as data
(:class:`TrustRoots`), so the same code checks real AMD evidence and emulated evidence.
"""

from cvm.attestation.verifier.appraisal import Evidence, VerifiedReport, Verifier
from cvm.attestation.verifier.chain import ChainVerifier, VerifiedChain
from cvm.attestation.verifier.policy import ReferenceValues, unchecked, validate
from cvm.attestation.verifier.report import verify_report
from cvm.attestation.verifier.trust import AMD_ARK_SHA256, TrustRoots

__all__ = [
    "AMD_ARK_SHA256", "ChainVerifier", "Evidence", "ReferenceValues", "TrustRoots",
    "VerifiedChain", "VerifiedReport", "Verifier", "unchecked", "validate", "verify_report",
]
