"""``cvm image register`` without a broker process: the broker's ``cvm-reference/1`` document
made from an image's reference values (what it pins, what it lists unchecked — and the broker's
own reader accepts it), the three requests registration makes (recorded through httpx's mock
transport: path, bearer token, body), and each refusal with the message the owner reads."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from cvm.attestation.verifier.reference import ReferenceDocument
from cvm.errors import ExternalToolError, FormatError, UsageError
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.formats.tcg.event_type import EventType
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image.kbs_registration import (
    broker_reference,
    image_state_key,
    register,
    state_counter,
)
from cvm.image.provisioning import wrap_state_key
from cvm.image.reference_values import LaunchReference, SnpClaims
from cvm.vtpm.state_file import MonotonicCounter, ReleasedKeyProvider, seal_state

from . import reference_samples
from .reference_samples import KERNEL, LOADER, MILAN, sample

KEY = bytes(range(32))
STATE_KEY = bytes(range(100, 132))
TOKEN = "the-admin-token"
UNCHECKED = ["host_data", "id_key_digest", "author_key_digest", "family_id", "image_id",
             "chip_id", "minimum_guest_svn", "minimum_firmware"]


# ---- the broker's reference document --------------------------------------------------------
def test_the_document_pins_the_snp_launches_the_quoted_pcrs_and_the_boot_images() -> None:
    document = broker_reference(sample())
    assert document == {
        "version": "cvm-reference/1",
        "measurement": ["a3" * 48, "a4" * 48],
        # the default quoted PCRs (0-9, 11, 14) the image predicts: not 23, not the sha1 bank
        "pcrs": {"sha256": {str(pcr): f"{pcr + 0x40:02x}" * 32 for pcr in (0, 4, 7, 11, 14)}},
        # PCR 4's image loads, each once, sorted: not the driver in PCR 2, not the action
        "boot_images": sorted([LOADER[1].hex(), KERNEL[1].hex()]),
        "vmpl": 2,
        "guest_policy": {"allow_debug": False, "allow_migration_agent": True},
        "event_log": base64.b64encode(reference_samples.event_log()).decode(),
        "unchecked": ["minimum_tcb", *UNCHECKED],
    }
    ReferenceDocument.from_bytes(json.dumps(document).encode())  # the broker's reader takes it


def test_a_minimum_tcb_is_pinned_instead_of_listed_unchecked() -> None:
    tcb = TcbVersion(boot_loader=3, tee=1, snp=22, microcode=213)
    document = broker_reference(sample(snp=SnpClaims(vmpl=0, allow_debug=True)), tcb)
    assert document["minimum_tcb"] == {"boot_loader": 3, "tee": 1, "snp": 22,
                                       "microcode": 213}
    assert document["unchecked"] == UNCHECKED
    assert document["vmpl"] == 0
    assert document["guest_policy"] == {"allow_debug": True, "allow_migration_agent": False}
    ReferenceDocument.from_bytes(json.dumps(document).encode())


def test_the_quoted_pcrs_chosen_are_the_ones_pinned() -> None:
    document = broker_reference(sample(), quoted_pcrs=(7, 23, 9))
    assert document["pcrs"] == {"sha256": {"7": "47" * 32, "23": "57" * 32}}
    assert broker_reference(sample(pcrs={"sha1": {0: bytes(20)}}))["pcrs"] == {"sha256": {}}


def test_an_image_without_an_snp_launch_cannot_be_registered() -> None:
    only_sev = (LaunchReference("sev", 1, "EPYC-Milan", MILAN, False, bytes(32)),)
    with pytest.raises(UsageError) as refused:
        broker_reference(sample(launch=only_sev))
    assert str(refused.value) == ("the image predicts no sev-snp launch: build it with "
                                  "--mode sev-snp")


def test_a_log_without_the_sha256_digest_of_a_boot_image_is_refused() -> None:
    boot = MeasuredBoot(SoftwarePcrBank(("sha1",)))
    boot.measure_digests(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, b"loader",
                         {"sha1": LOADER[0]})
    with pytest.raises(UsageError) as refused:
        broker_reference(sample(event_log=boot.log.to_bytes()))
    assert str(refused.value) == ("the reference event log has no sha256 digest of a boot "
                                  "image (PCR 4): the broker checks boot images in that bank")
    boot = MeasuredBoot(SoftwarePcrBank(("sha1",)))
    boot.measure(7, EventType.EV_SEPARATOR, bytes(4))  # no boot image: nothing to refuse
    assert broker_reference(sample(event_log=boot.log.to_bytes()))["boot_images"] == []


# ---- the bundle's files -------------------------------------------------------------------
def _bundle(tmp_path: Path, counter: int = 6) -> Path:
    folder = tmp_path / "image"
    (folder / "owner").mkdir(parents=True)
    (folder / "image.json").write_text(json.dumps({"vtpm": {"state": "state/vtpm.bin"}}))
    (folder / "state").mkdir()
    (folder / "state/vtpm.bin").write_bytes(seal_state(
        b"the vTPM's state", ReleasedKeyProvider(STATE_KEY), MonotonicCounter(counter),
        os.urandom))
    (folder / "owner/reference-values.json").write_bytes(sample().to_bytes())
    (folder / "reference-values.json").write_bytes(
        sample(launch=sample().launch[:1]).to_bytes())  # the host's copy: not read
    (folder / "owner/provisioning.key").write_bytes(KEY)
    (folder / "owner/vtpm-state-key.wrapped").write_bytes(
        wrap_state_key(KEY, STATE_KEY, os.urandom))
    return folder


def test_the_state_key_and_the_counter_come_from_the_bundle(tmp_path: Path) -> None:
    folder = _bundle(tmp_path, counter=6)
    assert image_state_key(folder) == STATE_KEY
    assert state_counter(folder) == 7  # sealing advanced the counter at 6 to 7


@pytest.mark.parametrize("manifest", [None, b"not json", b"[]", b'{"vtpm": {}}',
                                      b'{"vtpm": []}', b'{"image": 1}'])
def test_a_manifest_that_names_no_state_file_is_refused(tmp_path: Path,
                                                        manifest: bytes | None) -> None:
    folder = _bundle(tmp_path)
    if manifest is None:
        (folder / "image.json").unlink()
    else:
        (folder / "image.json").write_bytes(manifest)
    with pytest.raises(FormatError) as refused:
        state_counter(folder)
    assert str(refused.value) == f"{folder}/image.json: names no vTPM state file"


def test_a_missing_state_file_is_named(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    (folder / "state/vtpm.bin").unlink()
    with pytest.raises(UsageError) as refused:
        state_counter(folder)
    assert str(refused.value) == f"{folder}: the image has no state/vtpm.bin"


# ---- the requests -------------------------------------------------------------------------
class Broker:
    """Answers as the broker does and records each request."""

    def __init__(self, statuses: dict[str, int] | None = None,
                 answers: dict[str, Any] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.statuses = statuses or {}
        self.answers = {"reference": {"version": 3}, "resource": {},
                        "counter": {"value": 7, "kept": False}, **(answers or {})}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        kind = request.url.path.split("/")[3].replace("reference-values", "reference")
        status = self.statuses.get(kind, 200)
        if status >= 400:
            return httpx.Response(status, text=f"{kind} refused: " + "x" * 300)
        answer = self.answers[kind]
        if isinstance(answer, bytes):
            return httpx.Response(status, content=answer)
        return httpx.Response(status, json=answer)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self), base_url="http://kbs")


def test_registration_posts_the_reference_the_key_and_starts_the_counter(
        tmp_path: Path) -> None:
    folder = _bundle(tmp_path, counter=6)
    broker = Broker()
    client = broker.client()
    done = register(folder, "http://kbs", TOKEN, client=client)
    reference, resource, counter = broker.requests
    assert (reference.method, reference.url.path) == ("POST", "/kbs/v0/reference-values")
    assert json.loads(reference.content) == broker_reference(sample())
    assert reference.headers["content-type"] == "application/json"
    assert (resource.method, resource.url.path) == ("POST",
                                                   "/kbs/v0/resource/default/vtpm/state-key")
    assert resource.content == STATE_KEY
    assert (counter.method, counter.url.path) == ("PUT", "/kbs/v0/counter/default/vtpm/state-key")
    assert json.loads(counter.content) == {"value": 7}
    for request in broker.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert done == {"reference_version": 3, "resource": "default/vtpm/state-key",
                    "measurement": ["a3" * 48, "a4" * 48],
                    "unchecked": ["minimum_tcb", *UNCHECKED], "counter": 7,
                    "counter_kept": False}
    assert not client.is_closed  # the caller's client is the caller's to close


def test_the_resource_named_and_a_minimum_tcb_are_what_is_registered(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    broker = Broker(answers={"counter": {"value": 12, "kept": True}})
    tcb = TcbVersion(boot_loader=3, tee=0, snp=22, microcode=213)
    done = register(folder, "http://kbs", TOKEN, "owner1/vtpm/web", tcb, client=broker.client())
    reference, resource, counter = broker.requests
    assert json.loads(reference.content)["minimum_tcb"]["snp"] == 22
    assert resource.url.path == "/kbs/v0/resource/owner1/vtpm/web"
    assert counter.url.path == "/kbs/v0/counter/owner1/vtpm/web"
    assert done["resource"] == "owner1/vtpm/web" and done["unchecked"] == UNCHECKED
    assert (done["counter"], done["counter_kept"]) == (12, True)


@pytest.mark.parametrize("resource", ["default/disk/state-key", "vtpm/state-key",
                                      "a/vtpm/b/c", "/vtpm/key", "default/vtpm/",
                                      "default//state-key"])
def test_a_resource_the_svsm_cannot_open_is_refused(tmp_path: Path, resource: str) -> None:
    broker = Broker()
    with pytest.raises(UsageError) as refused:
        register(_bundle(tmp_path), "http://kbs", TOKEN, resource, client=broker.client())
    assert str(refused.value) == (
        f"--resource {resource!r}: expected REPOSITORY/vtpm/TAG (the type vtpm is what the "
        "SVSM's launch evidence may open)")
    assert broker.requests == []


@pytest.mark.parametrize(("missing", "purpose"), [
    ("owner/reference-values.json", "registering the image"),
    ("owner/provisioning.key", "registering"), ("owner/vtpm-state-key.wrapped", "registering")])
def test_a_missing_owner_file_is_named_before_any_request(tmp_path: Path, missing: str,
                                                          purpose: str) -> None:
    folder = _bundle(tmp_path)
    (folder / missing).unlink()
    broker = Broker()
    with pytest.raises(UsageError) as refused:
        register(folder, "http://kbs", TOKEN, client=broker.client())
    assert str(refused.value).startswith(f"{purpose} needs the owner's {folder / missing}")
    assert broker.requests == []


def test_a_folder_that_is_not_a_bundle_is_refused_before_any_request(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    (folder / "image.json").unlink()
    (folder / "image.json").mkdir()
    broker = Broker()
    with pytest.raises(UsageError) as refused:
        register(folder, "http://kbs", TOKEN, client=broker.client())
    assert str(refused.value) == f"{folder}: not an image bundle (no image.json)"
    assert broker.requests == []


@pytest.mark.parametrize(("kind", "what", "sent"), [
    ("reference", "reference values", 1), ("resource", "default/vtpm/state-key", 2),
    ("counter", "the rollback counter of default/vtpm/state-key", 3)])
def test_each_refusal_of_the_broker_is_named(tmp_path: Path, kind: str, what: str,
                                             sent: int) -> None:
    folder = _bundle(tmp_path)
    broker = Broker({kind: 401})
    with pytest.raises(UsageError) as refused:
        register(folder, "http://kbs", "wrong", client=broker.client())
    assert str(refused.value) == f"the broker refused the admin token registering {what}"
    assert len(broker.requests) == sent
    broker = Broker({kind: 400})
    with pytest.raises(UsageError) as refused:
        register(folder, "http://kbs", TOKEN, client=broker.client())
    assert str(refused.value) == (f"the broker refused {what}: 400 "
                                  f"{kind} refused: " + "x" * (200 - len(f"{kind} refused: ")))


def test_a_status_below_400_is_not_a_refusal(tmp_path: Path) -> None:
    broker = Broker({"resource": 399})
    broker.answers["resource"] = {}
    done = register(_bundle(tmp_path), "http://kbs", TOKEN, client=broker.client())
    assert done["reference_version"] == 3 and len(broker.requests) == 3


@pytest.mark.parametrize("answer", [b"not json", {"v": 1}, {"version": "three"},
                                    {"version": None}, []])
def test_an_answer_without_a_version_is_refused(tmp_path: Path, answer: Any) -> None:
    broker = Broker(answers={"reference": answer})
    with pytest.raises(FormatError) as refused:
        register(_bundle(tmp_path), "http://kbs", TOKEN, client=broker.client())
    assert str(refused.value) == "the broker's answer to the reference values has no version"


@pytest.mark.parametrize("answer", [b"not json", {"value": 7}, {"kept": True},
                                    {"value": "seven", "kept": True}, [], {"value": None,
                                                                           "kept": False}])
def test_an_answer_without_the_counter_is_refused(tmp_path: Path, answer: Any) -> None:
    broker = Broker(answers={"counter": answer})
    with pytest.raises(FormatError) as refused:
        register(_bundle(tmp_path), "http://kbs", TOKEN, client=broker.client())
    assert str(refused.value) == "the broker's answer to the rollback counter has no value"


def test_an_unreachable_broker_is_named(tmp_path: Path) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)
    client = httpx.Client(transport=httpx.MockTransport(unreachable), base_url="http://kbs")
    with pytest.raises(ExternalToolError) as refused:
        register(_bundle(tmp_path), "http://kbs.example:8080", TOKEN, client=client)
    assert str(refused.value) == ("cannot reach the key broker at http://kbs.example:8080 "
                                  "(connection refused)")


def test_without_a_client_it_connects_to_the_url_and_closes(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    broker = Broker()
    made: list[httpx.Client] = []
    real = httpx.Client

    def client(**options: Any) -> httpx.Client:
        assert options == {"base_url": "http://kbs:8443", "timeout": 30.0}
        made.append(real(transport=httpx.MockTransport(broker), **options))
        return made[-1]
    monkeypatch.setattr(httpx, "Client", client)
    register(_bundle(tmp_path), "http://kbs:8443/", TOKEN)
    assert made[0].is_closed and len(broker.requests) == 3
    assert str(broker.requests[0].url) == "http://kbs:8443/kbs/v0/reference-values"


def test_only_the_trailing_slash_of_the_url_is_dropped(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Broker()
    real = httpx.Client
    seen: list[str] = []

    def client(**options: Any) -> httpx.Client:
        seen.append(options["base_url"])
        return real(transport=httpx.MockTransport(broker), **options)
    monkeypatch.setattr(httpx, "Client", client)
    register(_bundle(tmp_path), "http://KBS.BOX/", TOKEN)
    assert seen == ["http://KBS.BOX"]
