"""Key broker load test on loopback: full auth -> attest -> resource round trips per second.

Usage: ``python benchmarks/kbs.py [--json] [--db URL] [--workers N] [--processes P]
[--clients C] [--round-trips R]``

A ``cvm kbs serve`` (SQLite by default, or ``--db``; ``--workers`` processes, 2 by default: the
broker and the emulated guests share the machine's cores) serves a fixed
number of concurrent clients (``--processes`` x ``--clients`` threads), each an emulated CVM on
its own chip that does the whole protocol ``--round-trips`` times: ``POST /auth``, evidence
production in the guest (SVSM attestation through the PSP, a vTPM quote), ``POST /attest``
(appraisal: chain, report and quote signatures, bindings, event-log replay, reference values,
Rego policy, EAR token), ``GET /resource`` (JWE to the TEE key). Every figure counts the
guest's evidence production too: client and broker share this machine's cores.

Figures: round trips per second, p50/p99 latency, errors, the CPU time one round trip costs the
broker and the guests (user + system, over the measured window: what the rate is made of, and
what a loaded machine does not change as much as the rate), the broker's resident memory after
a warm-up of three round trips per client and at the end.

Baseline, measured in this process: one bare appraisal
(``cvm.attestation.verifier.composite.appraise`` with a warm chain cache) of the same evidence;
the ratio says how many bare appraisals one full round trip costs.

Goal: >= 1,000 round trips/s on SQLite on a 2-core machine (must: >= 200), 0 errors, memory
flat.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cvm.amd import DEFAULT_SEED
from cvm.amd.pki import Vendor
from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.attestation.kbs.client import BrokerConnection, KbsClient
from cvm.attestation.verifier.composite import appraise
from cvm.attestation.verifier.reference import ReferenceDocument
from cvm.attestation.verifier.rego_policy import RegoPolicy
from cvm.attestation.verifier.trust import TrustRoots
from cvm.scenarios.attested_guest import (
    OwnerImage,
    build_owner,
    build_owner_image,
    reference_json,
    seeded_random,
)
from timing import argument_parser, median, print_figures

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
SECRET_PATH = "bench/disk/key"
WARM_UP_ROUND_TRIPS = 3


def _owner(image: OwnerImage) -> Any:
    """The owner and its chips, on the emulated AMD root of the benchmark's own data home (the
    broker's ``--trust emulated`` trusts that root)."""
    root = RootStore.for_workspace(DEFAULT_WORKSPACE).root("Milan", create=True)
    vendor = Vendor("Milan", DEFAULT_SEED, clock=lambda: ISSUED, root=root)
    return build_owner(vendor, seeded_random(b"cvm kbs benchmark"), image)


def _client_process(url: str, image: OwnerImage, first_chip: int, clients: int,
                    round_trips: int, ready: Any, start: Any, results: Any) -> None:
    owner = _owner(image)
    cvms = [owner.launch(first_chip + index) for index in range(clients)]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run(cvm: Any, count: int) -> None:
        connection = BrokerConnection(url, timeout=60)
        try:
            for _ in range(count):
                began = time.perf_counter()
                try:
                    connection.cookie = None  # a new session each round trip
                    client = KbsClient(url, connection)
                    client.attest(cvm)
                    client.resource(SECRET_PATH, cvm.tee_key)
                except Exception as error:  # a load test counts failures, it does not stop
                    with lock:
                        errors.append(f"{type(error).__name__}: {error}"[:200])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - began)
        finally:
            connection.close()

    for cvm in cvms:  # warm-up: the SVSM derives its EK, the agent its AK, the broker fills
        run(cvm, WARM_UP_ROUND_TRIPS)  # its caches (policy per thread, chain, replays)
    latencies.clear()
    ready.put((first_chip, errors[:]))
    errors.clear()
    start.wait()
    cpu = _cpu_seconds(os.getpid())
    threads = [threading.Thread(target=run, args=(cvm, round_trips)) for cvm in cvms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put((latencies, errors, _cpu_seconds(os.getpid()) - cpu))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its children (e.g. uvicorn's workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(stat[1]) == pid:
            total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _rss_kib(pid: int) -> int:
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) != pid and int(stat[1]) != pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _bare_appraisal_us(owner: Any, seconds: float) -> float:
    cvm = owner.launch(999)
    evidence = cvm.evidence("baseline nonce")
    reference = ReferenceDocument.from_json(reference_json(owner))
    roots = TrustRoots.of([owner.vendor.trust_anchor()], "emulated")
    policy = RegoPolicy()
    now = datetime.now(UTC)
    from cvm.attestation.verifier.chain import ChainVerifier

    chains = ChainVerifier(roots)

    def once() -> None:
        verdict = appraise(evidence, reference, policy, roots, now, chains=chains,
                           runtime_nonce="baseline nonce", tee_pubkey=cvm.tee_key.public_jwk(),
                           challenge="baseline nonce")
        assert verdict.accepted, verdict.findings

    return median(once, seconds=seconds, at_least=20).us


def run(db: str | None, workers: int, processes: int, clients: int, round_trips: int,
        seconds: float) -> dict[str, Any]:
    scratch = tempfile.TemporaryDirectory(prefix="cvm-kbs-bench-")
    folder = Path(scratch.name)
    os.environ["XDG_DATA_HOME"] = str(folder / "data")  # inherited by the broker and clients
    image = build_owner_image()
    owner = _owner(image)
    bare_us = _bare_appraisal_us(owner, seconds)
    url_db = db or f"sqlite:///{folder / 'kbs.db'}"
    port = 18000 + os.getpid() % 2000
    server = subprocess.Popen(
        [sys.executable, "-c", "from cvm.cli.main import run; run()", "kbs", "serve", "--db",
         url_db, "--port", str(port), "--workers", str(workers), "--kek-file",
         str(folder / "kek.hex"), "--admin-token-file", str(folder / "admin.token"),
         "--trust", "emulated"],
        stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        token = (folder / "admin.token").read_text().strip()
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}) as admin:
            admin.post("/kbs/v0/reference-values",
                       content=json.dumps(reference_json(owner))).raise_for_status()
            admin.post(f"/kbs/v0/resource/{SECRET_PATH}", content=b"k" * 32).raise_for_status()
        context = multiprocessing.get_context("spawn")
        ready, start, results = context.Queue(), context.Event(), context.Queue()
        children = [context.Process(target=_client_process, args=(
            url, image, 100 + index * clients, clients, round_trips, ready, start, results))
            for index in range(processes)]
        for child in children:
            child.start()
        warm_up_errors: list[str] = []
        for _ in children:
            warm_up_errors += ready.get(timeout=1800)[1]
        if warm_up_errors:
            raise SystemExit(f"warm-up failed: {warm_up_errors[0]}")
        memory_start = _rss_kib(server.pid)
        broker_cpu = _cpu_seconds(server.pid)
        began = time.perf_counter()
        start.set()
        latencies: list[float] = []
        errors: list[str] = []
        client_cpu = 0.0
        for _ in children:
            got_latencies, got_errors, got_cpu = results.get(timeout=3600)
            latencies += got_latencies
            errors += got_errors
            client_cpu += got_cpu
        elapsed = time.perf_counter() - began
        broker_cpu = _cpu_seconds(server.pid) - broker_cpu
        for child in children:
            child.join()
        memory_end = _rss_kib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        scratch.cleanup()
    latencies.sort()
    rate = len(latencies) / elapsed
    p50 = statistics.median(latencies) * 1e3 if latencies else 0.0
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1e3 if latencies else 0.0
    return {
        "database": "sqlite" if db is None else db.split(":", 1)[0],
        "workers": workers,
        "concurrent_clients": processes * clients,
        "round_trips": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "round_trips_per_s": round(rate, 1),
        "latency_p50_ms": round(p50, 2),
        "latency_p99_ms": round(p99, 2),
        "broker_cpu_ms_per_round_trip": round(broker_cpu / max(len(latencies), 1) * 1e3, 2),
        "guest_cpu_ms_per_round_trip": round(client_cpu / max(len(latencies), 1) * 1e3, 2),
        "broker_rss_start_mib": round(memory_start / 1024, 1),
        "broker_rss_end_mib": round(memory_end / 1024, 1),
        "bare_appraisal_us": round(bare_us, 1),
        "ratio_round_trip_to_bare_appraisal": round(1e6 / rate / bare_us, 2) if rate else 0.0,
        "goal_round_trips_per_s": 1000,
        "must_round_trips_per_s": 200,
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in a temp dir)")
    parser.add_argument("--workers", type=int, default=2, help="broker worker processes")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--clients", type=int, default=4, help="client threads per process")
    parser.add_argument("--round-trips", type=int, default=100, help="round trips per client")
    parser.add_argument("--seconds", type=float, default=1.0, help="baseline measuring time")
    args = parser.parse_args()
    figures = run(args.db, args.workers, args.processes, args.clients, args.round_trips,
                  args.seconds)
    print_figures(figures, as_json=args.json, line="{name:40} {value}")


if __name__ == "__main__":
    main()
