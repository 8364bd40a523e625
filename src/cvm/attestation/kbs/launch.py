"""Launch attestation at the broker: the SVSM's report-only evidence, and what it may open.

An SVSM attests before its vTPM runs (:mod:`cvm.formats.kbs.launch_evidence`), to obtain the
vTPM state key; a booted guest OS attests with composite evidence (report, quote, event log).
The two are kept apart by resource type:

* a **launch** attestation (``"evidence": "launch"`` in the verdict's claims and the token's
  annotated evidence; the session in state ``launch-attested``) opens only resources of type
  :data:`LAUNCH_RESOURCE_TYPE` — ``<repository>/vtpm/<tag>``;
* a **composite** attestation opens every other resource, and never a ``vtpm`` one: the vTPM
  state key belongs to the SVSM at VMPL0, not to the guest OS above it (with it an OS could
  forge the state its disk key is sealed in).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cvm.attestation.verifier.chain import ChainVerifier
from cvm.attestation.verifier.composite import Verdict, appraise
from cvm.attestation.verifier.launch_appraisal import LAUNCH, appraise_launch
from cvm.attestation.verifier.reference import ReferenceDocument
from cvm.attestation.verifier.rego_policy import RegoPolicy
from cvm.attestation.verifier.trust import TrustRoots
from cvm.formats.kbs.launch_evidence import LaunchEvidence
from cvm.formats.kbs.rcar import Attestation

LAUNCH_RESOURCE_TYPE = "vtpm"
ATTESTED, LAUNCH_ATTESTED = "attested", "launch-attested"


def appraise_payload(payload: Attestation, reference: ReferenceDocument, policy: RegoPolicy,
                     roots: TrustRoots, now: datetime, challenge: str,
                     chains: ChainVerifier) -> Verdict:
    """Appraise an Attestation payload as what it carries: launch or composite evidence."""
    if isinstance(payload.evidence, LaunchEvidence):
        return appraise_launch(payload.evidence, reference, policy, roots, now,
                               runtime_nonce=payload.nonce, tee_pubkey=payload.tee_pubkey,
                               challenge=challenge, chains=chains)
    return appraise(payload.evidence, reference, policy, roots, now,
                    runtime_nonce=payload.nonce, tee_pubkey=payload.tee_pubkey,
                    challenge=challenge, chains=chains)


def is_launch(claims: dict[str, Any]) -> bool:
    """Whether appraised claims (a verdict's, a token's annotated evidence) are a launch's."""
    return claims.get("evidence") == LAUNCH


def session_state(verdict: Verdict) -> str:
    """The state an accepted attestation leaves its session in."""
    return LAUNCH_ATTESTED if is_launch(verdict.claims) else ATTESTED


def may_open(path: str, launch: bool) -> bool:
    """Whether an attestation of that kind may open the resource at ``path``."""
    return (path.split("/")[1] == LAUNCH_RESOURCE_TYPE) == launch


def scope_finding(path: str, launch: bool) -> dict[str, str]:
    """The audit log's finding for a resource outside the attestation's scope."""
    if launch:
        return {"rule": "resource.scope", "expected": f"a <repository>/{LAUNCH_RESOURCE_TYPE}/"
                "<tag> resource (launch evidence opens the vTPM state key only)",
                "actual": path, "input": "launch evidence (the SVSM's report alone)"}
    return {"rule": "resource.scope", "expected": "a resource that is not of type "
            f"{LAUNCH_RESOURCE_TYPE} (vTPM state keys go to the SVSM's launch evidence only)",
            "actual": path, "input": "composite evidence (the guest OS's)"}
