"""The vTPM state's rollback counter in the broker, end to end: VMs booted through a broker on
loopback (SQLite, and PostgreSQL when CVM_TEST_POSTGRES_URL is set) save their state and boot
again; a host that rolls the state file back, forges the key's JWE, redirects the key request
or forges the advance answer is caught."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from cvm.amd.pki import Vendor, default_vendor
from cvm.attestation.kbs.broker import Broker, BrokerSettings
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.drbg import SeededRandom
from cvm.crypto.jose import wrap_to
from cvm.errors import IntegrityError, PolicyError
from cvm.formats.kbs.vtpm_counter import KeyRelease
from cvm.guest.run import boot_bundle
from cvm.guest.trace import VmTrace
from cvm.host.adversary.canary import CanaryScan
from cvm.host.relay import NetworkRelay
from cvm.host.vm_run import host_view
from cvm.image.bundle import ImageSpec, build_image
from cvm.image.kbs_registration import register, state_counter

from .conftest import ADMIN_TOKEN, Clock, database_url, serving

PATH = "counter-boot/vtpm/state-key"
OLD_TAG = "counter-boot/vtpm/old-tag"  # the same key registered again, under another tag


@dataclass
class CounterBroker:
    url: str
    broker: Broker
    vendor: Vendor
    start: int

    def value(self, path: str = PATH) -> int | None:
        return self.broker.counters.value(path)

    def reset(self, path: str = PATH) -> None:
        with httpx.Client(base_url=self.url, timeout=30,
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
            assert admin.put(f"/kbs/v0/counter/{path}", json={"value": self.start, "reset": True}
                             ).status_code == 200

    def audit(self) -> list[dict[str, object]]:
        with httpx.Client(base_url=self.url, timeout=30,
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
            rows = admin.get("/kbs/v0/audit", params={"limit": 1000}).json()
        assert isinstance(rows, list)
        return rows


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("counter-boot") / "image"
    build_image(out, ImageSpec(kdf_cost="fast", seed=23))
    return out


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def counter_kbs(request: pytest.FixtureRequest, image: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[CounterBroker]:
    vendor = default_vendor("Milan")
    roots = TrustRoots.of([vendor.trust_anchor()], "emulated")
    broker = Broker(Storage(database_url(request.param, tmp_path_factory)), bytes(range(32)),
                    roots, clock=Clock(), settings=BrokerSettings(session_ttl_seconds=60))
    with broker.storage.engine.begin() as db:
        db.execute(text("DELETE FROM kbs_counters"))
    with serving(broker) as url:
        done = register(image, url, ADMIN_TOKEN, PATH)
        assert (done["counter"], done["counter_kept"]) == (state_counter(image), False)
        assert register(image, url, ADMIN_TOKEN, OLD_TAG)["resource"] == OLD_TAG
        yield CounterBroker(url, broker, vendor, state_counter(image))


@pytest.fixture
def bundle(image: Path, tmp_path: Path, counter_kbs: CounterBroker) -> Path:
    """A private copy of the image, and the broker's counters back at the image's."""
    counter_kbs.reset()
    counter_kbs.reset(OLD_TAG)
    return Path(shutil.copytree(image, tmp_path / "image"))


def _state_file(folder: Path) -> Path:
    return folder / json.loads((folder / "image.json").read_bytes())["vtpm"]["state"]


def _boot(kbs: CounterBroker, folder: Path, seed: bytes, **options: object) -> VmTrace:
    return boot_bundle(folder, "sev-snp", random=SeededRandom(seed), kbs=kbs.url,
                       vendor=kbs.vendor, kbs_resource=PATH, **options)  # type: ignore[arg-type]


Rewrite = Callable[[bytes, Callable[[bytes], bytes]], bytes]


def _host_rewrites(monkeypatch: pytest.MonkeyPatch, rewrite: Rewrite) -> None:
    genuine = NetworkRelay.exchange
    monkeypatch.setattr(NetworkRelay, "exchange",
                        lambda relay, request: rewrite(request, lambda r: genuine(relay, r)))


def _http(document: object) -> bytes:
    body = json.dumps(document).encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(body)) + body


def _rollback_finding(trace: VmTrace, expected: int, actual: int) -> None:
    assert trace.refused is not None and trace.refused[0] == "svsm"
    error = trace.refused[1]
    assert isinstance(error, PolicyError) and "rollback" in str(error)
    assert [(f.claim, f.expected, f.actual) for f in error.findings] == [
        ("state counter", str(expected), str(actual))]
    assert not trace.unsealed and trace.workload is None


# ---- the genuine life of a VM ------------------------------------------------------------------
def test_boot_save_reboot_advances_the_brokers_counter(counter_kbs: CounterBroker,
                                                       bundle: Path) -> None:
    start = counter_kbs.start
    first = _boot(counter_kbs, bundle, b"first", store_state=True)
    assert first.refused is None and first.ok
    assert counter_kbs.value() == start + 1 == state_counter(bundle)
    assert counter_kbs.value(OLD_TAG) == start  # the other resource's counter is its own
    second = _boot(counter_kbs, bundle, b"second", store_state=True)
    assert second.refused is None and second.ok and second.unsealed
    assert counter_kbs.value() == start + 2 == state_counter(bundle)
    advanced = [row["subject"] for row in counter_kbs.audit()
                if (row["action"], row["outcome"]) == ("counter", "advanced")]
    assert advanced[-2:] == [f"{PATH} {start} -> {start + 1}",
                             f"{PATH} {start + 1} -> {start + 2}"]
    assert second.run is not None
    leaks = CanaryScan(second.secrets()).scan_all(host_view(second.run).items())
    assert [str(leak) for leak in leaks] == []


# ---- the host's attacks -----------------------------------------------------------------------
def test_a_host_that_rolls_the_state_file_back_is_refused(counter_kbs: CounterBroker,
                                                          bundle: Path) -> None:
    state = _state_file(bundle)
    old = state.read_bytes()  # the host's own copy, before the save
    assert _boot(counter_kbs, bundle, b"saves", store_state=True).ok
    state.write_bytes(old)  # ... and everything it holds goes back too
    trace = _boot(counter_kbs, bundle, b"rolled back")
    _rollback_finding(trace, counter_kbs.start + 1, counter_kbs.start)
    assert counter_kbs.value() == counter_kbs.start + 1


def test_a_counter_in_a_jwe_the_host_forged_is_refused(
        counter_kbs: CounterBroker, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host wraps its own release to the SVSM's (public) TEE key, with the counter of the
    old file it holds: it cannot know the state key, so the state file does not open."""
    state = _state_file(bundle)
    old = state.read_bytes()
    assert _boot(counter_kbs, bundle, b"saves", store_state=True).ok
    state.write_bytes(old)
    tee_key: dict[str, str] = {}

    def forge(request: bytes, forward: Callable[[bytes], bytes]) -> bytes:
        if request.startswith(b"POST /kbs/v0/attest "):
            body = json.loads(request.split(b"\r\n\r\n", 1)[1])
            tee_key.update(body["runtime-data"]["tee-pubkey"])
        if request.startswith(f"GET /kbs/v0/resource/{PATH} ".encode()):
            forward(request)
            release = KeyRelease(os.urandom(32), counter_kbs.start, PATH)
            return _http(wrap_to(tee_key, release.to_bytes()))
        return forward(request)

    _host_rewrites(monkeypatch, forge)
    trace = _boot(counter_kbs, bundle, b"forged jwe")
    assert trace.refused is not None and trace.refused[0] == "svsm"
    assert isinstance(trace.refused[1], IntegrityError)
    assert "does not authenticate" in str(trace.refused[1])
    assert not trace.unsealed


def test_a_release_for_another_tag_is_refused(
        counter_kbs: CounterBroker, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner registered the same key under a second tag, whose counter never moved: a host
    that sends the SVSM's key request there gets a genuine JWE with an old counter — refused,
    since the release names the path it is for."""
    state = _state_file(bundle)
    old = state.read_bytes()
    assert _boot(counter_kbs, bundle, b"saves", store_state=True).ok
    state.write_bytes(old)

    def redirect(request: bytes, forward: Callable[[bytes], bytes]) -> bytes:
        return forward(request.replace(PATH.encode(), OLD_TAG.encode(), 1))

    _host_rewrites(monkeypatch, redirect)
    trace = _boot(counter_kbs, bundle, b"redirected")
    assert trace.refused is not None and isinstance(trace.refused[1], IntegrityError)
    assert f"released the key of {OLD_TAG!r}" in str(trace.refused[1])
    assert not trace.unsealed


def test_a_forged_advance_answer_fails_the_save(
        counter_kbs: CounterBroker, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SVSM keeps the new state file to itself unless the broker's answer authenticates; the
    broker did advance, so the old file is now refused (the host denied the VM its state, as it
    could by deleting the file — documented)."""
    state = _state_file(bundle)
    old = state.read_bytes()

    def forge(request: bytes, forward: Callable[[bytes], bytes]) -> bytes:
        answer = forward(request)
        if request.startswith(b"POST /kbs/v0/counter/"):
            document = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            document["mac"] = re.sub("^.", lambda m: "B" if m[0] != "B" else "C",
                                     document["mac"])
            return _http(document)
        return answer

    _host_rewrites(monkeypatch, forge)
    trace = _boot(counter_kbs, bundle, b"forged answer", store_state=True)
    assert trace.refused is not None and trace.refused[0] == "shutdown"
    assert isinstance(trace.refused[1], IntegrityError)
    assert "the state was not saved" in str(trace.refused[1])
    assert state.read_bytes() == old  # the host was handed no file
    assert counter_kbs.value() == counter_kbs.start + 1
    monkeypatch.undo()
    _rollback_finding(_boot(counter_kbs, bundle, b"after"), counter_kbs.start + 1,
                      counter_kbs.start)


def test_a_state_file_one_ahead_of_the_broker_opens_and_commits(counter_kbs: CounterBroker,
                                                                bundle: Path) -> None:
    """state_file's window: a file one past the counter (a save the broker never saw) opens,
    and the boot advances the broker's counter to it first."""
    assert _boot(counter_kbs, bundle, b"saves", store_state=True).ok
    counter_kbs.reset()  # the owner set the counter back to the image's: one below the file
    trace = _boot(counter_kbs, bundle, b"ahead")
    assert trace.refused is None and trace.ok
    assert counter_kbs.value() == counter_kbs.start + 1
