"""A fleet attests to one broker, then a TCB-minimum policy rollout: exactly the stale CVMs are
denied, and the audit log names them.

Usage: ``python benchmarks/fleet.py [--json] [--cvms 1000] [--stale-every 10] [--processes 2]
[--db URL]``

``--cvms`` emulated CVMs, each on its own chip (its own chip secret, VCEK and chip ID) and with
its own SVSM and vTPM (its own endorsement seed and EK), every ``--stale-every``-th on a PSP
whose firmware is an old TCB, are launched and booted by ``--processes`` host processes, and
attest to one broker: each host process runs the broker's logic on the one shared database
(without HTTP, so the figure is the fleet's, not the transport's), as the workers of one
``cvm kbs serve`` do. First the owner's reference values accept both TCBs: everyone is affirmed.
Then the owner rolls out a Rego policy with a TCB minimum through the admin interface, and the
fleet attests again: the broker must deny exactly the stale CVMs, each with a ``tcb.minimum``
finding in the audit log, and affirm every other.

Baseline, in this process: one bare appraisal of one CVM's evidence; the figure is the fleet's
attestations per second against it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cvm.amd import DEFAULT_SEED
from cvm.amd.pki import Vendor
from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
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
    OwnerImage,
    build_owner,
    build_owner_image,
    reference_json,
    seeded_random,
)
from timing import argument_parser, median, print_figures

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
KEK = bytes(range(32))
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


def _owner(image: OwnerImage) -> Any:
    """The owner on the emulated AMD root of the benchmark's own data home (one per run)."""
    root = RootStore.for_workspace(DEFAULT_WORKSPACE).root("Milan", create=True)
    vendor = Vendor("Milan", DEFAULT_SEED, clock=lambda: ISSUED, root=root)
    return build_owner(vendor, seeded_random(b"cvm fleet"), image)


def _host(url: str, image: OwnerImage, chips: list[int], stale_every: int, progress: Any,
          go: Any, results: Any) -> None:
    """One host process: launch and boot its CVMs, then attest them at each signal."""
    owner = _owner(image)
    broker = Broker(Storage(url), KEK, TrustRoots.of([owner.vendor.trust_anchor()], "emulated"))
    fleet = []
    for index in chips:
        cvm = owner.launch(index, OLD_TCB if index % stale_every == 0 else CURRENT_TCB)
        cvm.guest.svsm.ek_public()  # the SVSM derives its EK (RSA-2048) once, at boot
        cvm.evidence("warm-up")  # the attestation agent makes its AK once
        fleet.append((index, cvm))
        progress.put(1)
    for _ in range(2):
        go.wait()  # the round starts when every host process and the owner are there
        results.put([(index, _attest(broker, cvm)) for index, cvm in fleet])


def _collect(results: Any, processes: int) -> dict[int, bool]:
    outcome: dict[int, bool] = {}
    for _ in range(processes):
        outcome.update(results.get(timeout=7200))
    return outcome


def run(cvms: int, stale_every: int, processes: int, db: str | None,
        seconds: float) -> dict[str, Any]:
    scratch = tempfile.TemporaryDirectory(prefix="cvm-fleet-")
    os.environ["XDG_DATA_HOME"] = str(Path(scratch.name) / "data")  # the host processes too
    image = build_owner_image()
    owner = _owner(image)
    vendor = owner.vendor
    roots = TrustRoots.of([vendor.trust_anchor()], "emulated")
    lenient = reference_json(owner, minimum_tcb=OLD_TCB)
    url = db or f"sqlite:///{Path(scratch.name) / 'kbs.db'}"
    storage = Storage(url)
    broker = Broker(storage, KEK, roots)
    broker.set_reference(json.dumps(lenient).encode())
    stale_chips = {vendor.manufacture_chip(index).chip_id.hex()
                   for index in range(0, cvms, stale_every)}

    context = multiprocessing.get_context("spawn")
    progress, results = context.Queue(), context.Queue()
    go = context.Barrier(processes + 1)
    hosts = [context.Process(target=_host, args=(
        url, image, list(range(first, cvms, processes)), stale_every, progress, go, results))
        for first in range(processes)]
    began = time.perf_counter()
    for host in hosts:
        host.start()
    for launched in range(1, cvms + 1):
        progress.get(timeout=3600)
        if launched % 100 == 0 or launched == cvms:
            print(f"  launched and booted {launched}/{cvms} CVMs", file=sys.stderr, flush=True)
    launch_seconds = time.perf_counter() - began

    began = time.perf_counter()
    go.wait()
    before = _collect(results, processes)
    first_seconds = time.perf_counter() - began
    mark = max((row["id"] for row in storage.audit_log(1_000_000)), default=0)

    broker.set_policy(TCB_MINIMUM_POLICY)
    began = time.perf_counter()
    go.wait()
    after = _collect(results, processes)
    second_seconds = time.perf_counter() - began
    for host in hosts:
        host.join()
    rows = storage.audit_log(1_000_000, mark)
    denied_chips = {row["chip_id"] for row in rows if row["outcome"] == "denied"}
    findings_ok = all(
        {f["rule"] for f in row["findings"]} == {"tcb.minimum"}
        for row in rows if row["outcome"] == "denied")
    exact = (denied_chips == stale_chips and findings_ok
             and all(after[index] == (index % stale_every != 0) for index in range(cvms)))

    cvm = owner.launch(cvms)
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
        "host_processes": processes,
        "stale_cvms": len(stale_chips),
        "affirmed_before_rollout": sum(before.values()),
        "denied_after_rollout": sum(not ok for ok in after.values()),
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
    parser.add_argument("--processes", type=int, default=2, help="host processes")
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in a temp dir)")
    parser.add_argument("--seconds", type=float, default=1.0, help="baseline measuring time")
    args = parser.parse_args()
    figures = run(args.cvms, args.stale_every, args.processes, args.db, args.seconds)
    print_figures(figures, as_json=args.json, line="{name:40} {value}")
    if not figures["denied_exactly_the_stale_ones"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
