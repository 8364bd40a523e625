"""The SVSM obtains the vTPM state key from a key broker on loopback at boot, through the host.

A broker (uvicorn in a thread; SQLite, and PostgreSQL when CVM_TEST_POSTGRES_URL is set) with an
image built by the owner's builder registered (``cvm image register``'s library call); the VM
booted by :func:`cvm.guest.run.boot_bundle` with ``kbs=URL``. A genuine boot gets its key; the
host's attacks on the boot chain it launches are denied, with the finding in the audit log; the
bytes the host relays never hold the key.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cvm.amd.pki import Vendor, default_vendor
from cvm.attestation.kbs.broker import Broker, BrokerSettings
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.drbg import SeededRandom
from cvm.errors import ExternalToolError, PolicyError, UsageError
from cvm.guest.run import boot_bundle
from cvm.guest.trace import VmTrace
from cvm.host.adversary.canary import CanaryScan
from cvm.host.adversary.launch import FIRMWARE_BIT
from cvm.host.relay import NetworkRelay
from cvm.host.vm_run import host_view
from cvm.image.bundle import ImageSpec, build_image
from cvm.image.kbs_registration import image_state_key, register

from .conftest import ADMIN_TOKEN, Clock, database_url, free_port, serving

STATE_KEY_PATH = "default/vtpm/state-key"


@dataclass
class BootBroker:
    url: str
    broker: Broker
    vendor: Vendor
    image: Path

    def audit(self) -> list[dict[str, object]]:
        with httpx.Client(base_url=self.url, timeout=30,
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
            rows = client.get("/kbs/v0/audit", params={"limit": 1000}).json()
        assert isinstance(rows, list)
        return rows

    def rows_after(self, mark: int) -> list[dict[str, object]]:
        return [row for row in self.audit() if int(str(row["id"])) > mark]

    def mark(self) -> int:
        rows = self.audit()
        return int(str(rows[-1]["id"])) if rows else 0


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kbs-boot") / "image"
    build_image(out, ImageSpec(kdf_cost="fast", seed=21))
    return out


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def boot_kbs(request: pytest.FixtureRequest, image: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootBroker]:
    vendor = default_vendor("Milan")
    roots = TrustRoots.of([vendor.trust_anchor()], "emulated")
    broker = Broker(Storage(database_url(request.param, tmp_path_factory)), bytes(range(32)),
                    roots, clock=Clock(), settings=BrokerSettings(session_ttl_seconds=60))
    with serving(broker) as url:
        done = register(image, url, ADMIN_TOKEN)
        assert done["resource"] == STATE_KEY_PATH
        yield BootBroker(url, broker, vendor, image)


@pytest.fixture
def bundle(image: Path, tmp_path: Path) -> Path:
    """A private copy of the image: the boot writes its disk, an attack edits its files."""
    return Path(shutil.copytree(image, tmp_path / "image"))


def _boot(kbs: BootBroker, folder: Path, seed: bytes, **options: object) -> VmTrace:
    return boot_bundle(folder, "sev-snp", random=SeededRandom(seed), kbs=kbs.url,
                       vendor=kbs.vendor, **options)  # type: ignore[arg-type]


def _relayed(trace: VmTrace, start: bytes) -> list[bytes]:
    assert trace.run is not None
    return [entry for entry in trace.run.log if entry.startswith(start)]


def _attest_body(trace: VmTrace) -> dict[str, object]:
    (request,) = _relayed(trace, b"POST /kbs/v0/attest ")
    body = json.loads(request.split(b"\r\n\r\n", 1)[1])
    assert isinstance(body, dict)
    return body


# ---- the genuine boot -------------------------------------------------------------------------
def test_a_genuine_boot_gets_its_state_key_from_the_broker(boot_kbs: BootBroker,
                                                            bundle: Path) -> None:
    mark = boot_kbs.mark()
    trace = _boot(boot_kbs, bundle, b"genuine")
    assert trace.refused is None and trace.ok
    assert trace.unsealed and trace.workload is not None
    assert {"key broker"} <= {step.actor for step in trace.steps}
    rows = boot_kbs.rows_after(mark)
    assert [(row["action"], row["outcome"]) for row in rows] == [
        ("attest", "affirmed"), ("resource", "released")]
    assert str(rows[1]["subject"]).startswith(STATE_KEY_PATH)
    assert "pcrs" in str(rows[0]["subject"])  # a launch report carries no PCRs: listed unchecked
    body = _attest_body(trace)
    evidence = body["tee-evidence"]["primary_evidence"]  # type: ignore[index]
    assert evidence["version"] == "cvm-launch-evidence/1"


def test_the_host_relays_the_exchange_but_cannot_read_the_key(boot_kbs: BootBroker,
                                                               bundle: Path) -> None:
    trace = _boot(boot_kbs, bundle, b"scan")
    assert trace.ok and trace.run is not None
    key = image_state_key(bundle)
    secrets = trace.secrets()
    assert secrets["vTPM state key"] == key  # the key the SVSM holds is the image's
    (answer,) = [entry for entry in trace.run.log
                 if entry.startswith(b"HTTP/1.1 200") and b'"ciphertext"' in entry]
    assert b'"encrypted_key"' in answer  # the JWE crossed the host
    relayed = b"\n".join(trace.run.log)
    for form in (key, key.hex().encode(), base64.b64encode(key),
                 base64.urlsafe_b64encode(key).rstrip(b"=")):
        assert form not in relayed
    leaks = CanaryScan(secrets).scan_all(host_view(trace.run).items())
    assert [str(leak) for leak in leaks] == []


def test_the_scan_sees_the_key_when_it_is_relayed_in_clear(boot_kbs: BootBroker,
                                                            bundle: Path) -> None:
    """The positive control: had the broker's answer carried the key, the scan would see it."""
    trace = _boot(boot_kbs, bundle, b"control")
    assert trace.run is not None
    trace.run.log.append(b"HTTP/1.1 200 OK\r\n\r\n" + image_state_key(bundle))
    leaks = CanaryScan(trace.secrets()).scan_all(host_view(trace.run).items())
    assert "vTPM state key" in " ".join(str(leak) for leak in leaks)


# ---- the host's attacks -----------------------------------------------------------------------
def _denial(kbs: BootBroker, mark: int) -> dict[str, object]:
    rows = kbs.rows_after(mark)
    assert [row["outcome"] for row in rows if row["action"] == "resource"] == []
    (denied,) = [row for row in rows if row["outcome"] == "denied"]
    return denied


def _refused_at_the_svsm(trace: VmTrace) -> None:
    assert trace.refused is not None and trace.refused[0] == "svsm"
    assert isinstance(trace.refused[1], PolicyError)
    assert "401 AttestationFailed" in str(trace.refused[1])  # the generic denial, no findings
    assert not trace.unsealed and trace.workload is None


def test_firmware_the_host_tampered_with_is_denied_with_the_measurement(
        boot_kbs: BootBroker, bundle: Path) -> None:
    firmware = bytearray((bundle / "firmware" / "OVMF.fd").read_bytes())
    firmware[FIRMWARE_BIT // 8] ^= 1 << (FIRMWARE_BIT % 8)
    (bundle / "firmware" / "OVMF.fd").write_bytes(firmware)
    mark = boot_kbs.mark()
    trace = _boot(boot_kbs, bundle, b"firmware")
    _refused_at_the_svsm(trace)
    denied = _denial(boot_kbs, mark)
    findings = denied["findings"]
    assert isinstance(findings, list) and [f["rule"] for f in findings] == ["measurement"]
    assert findings[0]["actual"] == trace.launch_measurement.hex()  # type: ignore[union-attr]


def test_a_launch_with_more_vcpus_than_registered_is_denied(boot_kbs: BootBroker,
                                                            bundle: Path) -> None:
    mark = boot_kbs.mark()
    trace = _boot(boot_kbs, bundle, b"vcpus", vcpus=2)
    _refused_at_the_svsm(trace)
    findings = _denial(boot_kbs, mark)["findings"]
    assert isinstance(findings, list) and findings[0]["rule"] == "measurement"


def test_a_host_that_swaps_in_its_own_tee_key_is_denied(
        boot_kbs: BootBroker, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host rewrites the attestation in flight so the JWE would be wrapped to its key: the
    report's REPORT_DATA binds the SVSM's key, so the broker refuses."""
    from cvm.crypto.jose import KeyPair

    thief = KeyPair.generate().public_jwk()
    genuine = NetworkRelay.exchange

    def swap(relay: NetworkRelay, request: bytes) -> bytes:
        if request.startswith(b"POST /kbs/v0/attest "):
            head, body = request.split(b"\r\n\r\n", 1)
            document = json.loads(body)
            document["runtime-data"]["tee-pubkey"] = thief
            body = json.dumps(document).encode()
            head = re.sub(rb"content-length: \d+", b"content-length: %d" % len(body), head)
            request = head + b"\r\n\r\n" + body
        return genuine(relay, request)

    monkeypatch.setattr(NetworkRelay, "exchange", swap)
    mark = boot_kbs.mark()
    trace = _boot(boot_kbs, bundle, b"thief")
    _refused_at_the_svsm(trace)
    findings = _denial(boot_kbs, mark)["findings"]
    assert isinstance(findings, list) and [f["rule"] for f in findings] == [
        "verify.report_data"]


def test_the_hosts_copy_of_an_attestation_replayed_in_a_new_session_is_denied(
        boot_kbs: BootBroker, bundle: Path) -> None:
    trace = _boot(boot_kbs, bundle, b"replayed")
    assert trace.ok
    body = _attest_body(trace)
    mark = boot_kbs.mark()
    with httpx.Client(base_url=boot_kbs.url, timeout=30) as client:
        nonce = client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp"}).json()
        body["runtime-data"]["nonce"] = nonce["nonce"]  # type: ignore[index]
        answer = client.post("/kbs/v0/attest", json=body)
        assert answer.status_code == 401
        assert client.get(f"/kbs/v0/resource/{STATE_KEY_PATH}").status_code == 401
    findings = _denial(boot_kbs, mark)["findings"]
    assert isinstance(findings, list) and findings[0]["rule"] == "verify.replay"


# ---- scope: the state key is the SVSM's, nothing else is ---------------------------------------
def test_launch_evidence_opens_no_other_resource(boot_kbs: BootBroker, bundle: Path) -> None:
    with httpx.Client(base_url=boot_kbs.url, timeout=30,
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        assert admin.post("/kbs/v0/resource/default/disk/other", content=b"x" * 32
                          ).status_code == 200
    mark = boot_kbs.mark()
    trace = _boot(boot_kbs, bundle, b"scope", kbs_resource="default/disk/other")
    assert trace.refused is not None and isinstance(trace.refused[1], PolicyError)
    assert "403 PolicyDeny" in str(trace.refused[1])
    rows = boot_kbs.rows_after(mark)
    assert [(row["action"], row["outcome"]) for row in rows] == [
        ("attest", "affirmed"), ("resource", "refused")]
    findings = rows[1]["findings"]
    assert isinstance(findings, list) and findings[0]["rule"] == "resource.scope"


def test_an_unregistered_state_key_is_a_usage_error(boot_kbs: BootBroker, bundle: Path) -> None:
    trace = _boot(boot_kbs, bundle, b"missing", kbs_resource="default/vtpm/nothing-here")
    assert trace.refused is not None and isinstance(trace.refused[1], UsageError)
    assert "404" in str(trace.refused[1])


def test_an_unreachable_broker_is_named(bundle: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    trace = boot_bundle(bundle, "sev-snp", random=SeededRandom(b"x"), kbs=url)
    assert trace.refused is not None and isinstance(trace.refused[1], ExternalToolError)
    assert url.removeprefix("http://") in str(trace.refused[1])


def test_kbs_needs_sev_snp(bundle: Path) -> None:
    with pytest.raises(UsageError, match="sev-snp"):
        boot_bundle(bundle, "sev", kbs="http://127.0.0.1:1")


Register = Callable[..., object]


def test_registration_refuses_a_resource_the_svsm_cannot_open(bundle: Path) -> None:
    with pytest.raises(UsageError, match="vtpm"):
        register(bundle, "http://127.0.0.1:1", ADMIN_TOKEN, "default/disk/state-key")


def test_registration_with_a_wrong_admin_token_is_refused(boot_kbs: BootBroker,
                                                          bundle: Path) -> None:
    with pytest.raises(UsageError, match="admin token"):
        register(bundle, boot_kbs.url, "not-the-admin-token")
