"""A fleet attests to one broker, then a TCB-minimum policy rollout: exactly the stale CVMs are
denied, and the audit log names them.

Usage: ``python benchmarks/fleet.py [--json] [--cvms 1000] [--stale-every 10] [--db URL]``

``--cvms`` emulated CVMs, each on its own chip (its own chip secret, VCEK and chip ID), every
``--stale-every``-th on a PSP whose firmware is an old TCB, attest to one broker (the broker's
logic on a shared database, without HTTP, so the figure is the fleet's, not the transport's).
First the owner's reference values accept both TCBs: everyone is affirmed. Then the owner
rolls out a Rego policy with a TCB minimum through the admin interface, and the fleet attests
again: the broker must deny exactly the stale CVMs, each with a ``tcb.minimum`` finding in the
audit log, and affirm every other.

Baseline, in this process: one bare appraisal of one CVM's evidence; the figure is the fleet's
attestations per second against it.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cvm.amd import DEFAULT_SEED
from cvm.amd.pki import Vendor
from cvm.attestation.kbs.broker import Broker, ProblemError
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.chain import ChainVerifier
from cvm.attestation.verifier.composite import appraise
from cvm.attestation.verifier.reference import ReferenceDocument
from cvm.attestation.verifier.rego_policy import RegoPolicy
from cvm.attestation.verifier.trust import TrustRoots
from cvm.formats.kbs.rcar import Attestation
from cvm.scenarios.attested_guest import (
    CURRENT_TCB,
    OLD_TCB,
    build_owner,
    reference_json,
    seeded_random,
)
from timing import argument_parser, median, print_figures

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
TCB_MINIMUM_POLICY = f"""package cvm.policy

import rego.v1

default allow := false

deny contains finding if {{
	some finding in input.findings
}}

# The rollout: firmware older than SNP SVN {CURRENT_TCB.snp} / microcode {CURRENT_TCB.microcode}
# is no longer trusted.
deny contains {{"rule": "tcb.minimum", "expected": "snp >= {CURRENT_TCB.snp}, microcode >= \
{CURRENT_TCB.microcode}", "actual": sprintf("snp %d, microcode %d", [tcb.snp, tcb.microcode]),
	"input": "reported_tcb"}} if {{
	tcb := input.claims.reported_tcb
	tcb.snp < {CURRENT_TCB.snp}
}}

deny contains {{"rule": "tcb.minimum", "expected": "snp >= {CURRENT_TCB.snp}, microcode >= \
{CURRENT_TCB.microcode}", "actual": sprintf("snp %d, microcode %d", [tcb.snp, tcb.microcode]),
	"input": "reported_tcb"}} if {{
	tcb := input.claims.reported_tcb
	tcb.microcode < {CURRENT_TCB.microcode}
}}

allow if count(deny) == 0
"""


def _attest(broker: Broker, cvm: Any) -> bool:
    session, challenge = broker.auth(b'{"version": "0.4.0", "tee": "snp"}')
    nonce = challenge["nonce"]
    key = cvm.tee_key.public_jwk()
    payload = Attestation(nonce, key, cvm.evidence(nonce, key)).to_json()
    try:
        broker.attest(session, json.dumps(payload).encode())
    except ProblemError:
        return False
    return True


def run(cvms: int, stale_every: int, db: str | None, seconds: float) -> dict[str, Any]:
    vendor = Vendor("Milan", DEFAULT_SEED, clock=lambda: ISSUED)
    owner = build_owner(vendor, seeded_random(b"cvm fleet"))
    roots = TrustRoots.of([vendor.trust_anchor()], "emulated")
    lenient = reference_json(owner, minimum_tcb=OLD_TCB)
    scratch = tempfile.TemporaryDirectory(prefix="cvm-fleet-")
    storage = Storage(db or f"sqlite:///{Path(scratch.name) / 'kbs.db'}")
    broker = Broker(storage, bytes(range(32)), roots)
    broker.set_reference(json.dumps(lenient).encode())
    began = time.perf_counter()
    fleet = []
    stale_chips = set()
    for index in range(cvms):
        stale = index % stale_every == 0
        cvm = owner.launch(index, OLD_TCB if stale else CURRENT_TCB)
        cvm.guest.svsm.ek_public()  # the SVSM derives its EK (RSA-2048) once, at boot
        fleet.append((index, stale, cvm))
        if stale:
            stale_chips.add(vendor.manufacture_chip(index).chip_id.hex())
    launch_seconds = time.perf_counter() - began

    began = time.perf_counter()
    before = [_attest(broker, cvm) for _, _, cvm in fleet]
    first_seconds = time.perf_counter() - began
    mark = max((row["id"] for row in storage.audit_log(1_000_000)), default=0)

    broker.set_policy(TCB_MINIMUM_POLICY)
    began = time.perf_counter()
    after = [_attest(broker, cvm) for _, _, cvm in fleet]
    second_seconds = time.perf_counter() - began
    rows = storage.audit_log(1_000_000, mark)
    denied_chips = {row["chip_id"] for row in rows if row["outcome"] == "denied"}
    findings_ok = all(
        {f["rule"] for f in row["findings"]} == {"tcb.minimum"}
        for row in rows if row["outcome"] == "denied")
    exact = (denied_chips == stale_chips and findings_ok
             and [not ok for ok in after] == [stale for _, stale, _ in fleet])

    cvm = fleet[-1][2]
    evidence = cvm.evidence("baseline")
    reference = ReferenceDocument.from_json(lenient)
    chains = ChainVerifier(roots)
    policy = RegoPolicy(TCB_MINIMUM_POLICY)
    now = datetime.now(UTC)
    bare = median(lambda: appraise(evidence, reference, policy, roots, now, chains=chains,
                                   runtime_nonce="baseline", tee_pubkey=cvm.tee_key.public_jwk(),
                                   challenge="baseline"), seconds=seconds, at_least=20)
    storage.engine.dispose()
    scratch.cleanup()
    rate = cvms / second_seconds
    return {
        "cvms": cvms,
        "stale_cvms": len(stale_chips),
        "affirmed_before_rollout": sum(before),
        "denied_after_rollout": sum(not ok for ok in after),
        "denied_exactly_the_stale_ones": exact,
        "audit_denials_with_tcb_finding": len(denied_chips) if findings_ok else 0,
        "launch_and_boot_seconds": round(launch_seconds, 1),
        "attestations_per_s_before_rollout": round(cvms / first_seconds, 1),
        "attestations_per_s_after_rollout": round(rate, 1),
        "bare_appraisal_us": round(bare.us, 1),
        "ratio_attestation_to_bare_appraisal": round(1e6 / rate / bare.us, 2),
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--cvms", type=int, default=1000, help="CVMs in the fleet")
    parser.add_argument("--stale-every", type=int, default=10, help="every Nth is on an old TCB")
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in a temp dir)")
    parser.add_argument("--seconds", type=float, default=1.0, help="baseline measuring time")
    args = parser.parse_args()
    figures = run(args.cvms, args.stale_every, args.db, args.seconds)
    print_figures(figures, as_json=args.json, line="{name:40} {value}")
    if not figures["denied_exactly_the_stale_ones"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
