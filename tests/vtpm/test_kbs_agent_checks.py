"""The SVSM's key broker agent, step by step, against a scripted broker behind the host's relay:
what it sends at each step, what it refuses in each answer, and what it leaves in the key page
(the whole exchange with the real broker is in tests/attestation/kbs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from tests.vtpm.svsm_vmpl0 import vmpl0

from cvm.crypto.jose import wrap_to
from cvm.crypto.tpm_keys import ecc_from_seed, ecc_point
from cvm.errors import FormatError, IntegrityError, PolicyError, StatusError, UsageError
from cvm.formats.kbs.json_fields import b64url_encode
from cvm.formats.kbs.launch_evidence import launch_report_data
from cvm.formats.kbs.vtpm_counter import KeyRelease
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.report_request import ReportResponse
from cvm.guest.svsm.kbs_agent import DEFAULT_RESOURCE, KbsAgent
from cvm.guest.svsm.kbs_counter import KbsCounter
from cvm.guest.svsm.svsm import SvsmLayout

LAYOUT = SvsmLayout()
KEY_GPA, SCALAR = LAYOUT.key_gpa, LAYOUT.key_gpa + 0x100
STATE_KEY = bytes(range(3, 35))
SEED = bytes(range(200, 232))
CHAIN = (b"vcek", b"ask", b"ark")
URL = "http://kbs.test:8080"


def _http(status: int, document: object) -> bytes:
    body = json.dumps(document).encode()
    return (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


class Broker:
    """Answers the agent's three requests; ``answers`` overrides one by path."""

    def __init__(self, path: str = DEFAULT_RESOURCE, counter: int = 9) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.path, self.counter = path, counter
        self.answers: dict[str, bytes] = {}
        self.tee_pubkey: dict[str, str] = {}

    def __call__(self, raw: bytes) -> bytes:
        head, _, body = raw.partition(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n")[0].decode().split(" ")
        document = json.loads(body) if body else None
        self.requests.append((method, target, document))
        if target in self.answers:
            return self.answers[target]
        if target == "/kbs/v0/auth":
            return _http(200, {"nonce": "broker-nonce"})
        if target == "/kbs/v0/attest":
            self.tee_pubkey = document["runtime-data"]["tee-pubkey"]
            return _http(200, {"token": "t"})
        release = KeyRelease(STATE_KEY, self.counter, self.path).to_bytes()
        return _http(200, wrap_to(self.tee_pubkey, release))


def _seeds(size: int) -> bytes:
    assert size == 32  # one P-256 scalar's worth
    return SEED


def _agent(broker: Broker, reports: list[bytes] | None = None,
           counter: KbsCounter | None = None) -> KbsAgent:
    def certificates(report: bytes) -> tuple[bytes, bytes, bytes]:
        if reports is not None:
            reports.append(report)
        return CHAIN
    return KbsAgent(URL, broker, certificates, counter=counter)


def _untouched(vcpu: Any) -> bool:
    return bool(vcpu.read(KEY_GPA, 32) == b"\xdd" * 32 and vcpu.read(SCALAR, 32) == bytes(32))


def test_the_agent_attests_and_leaves_the_key_and_the_counter(snp: Any) -> None:
    vcpu, requester = vmpl0(snp)
    broker, reports = Broker(), []
    counter = KbsCounter(URL, broker, DEFAULT_RESOURCE)
    _agent(broker, reports, counter).obtain_state_key(vcpu, requester, KEY_GPA, _seeds)
    point = ecc_point("p256", ecc_from_seed("p256", SEED, b"svsm kbs tee key"))
    jwk = {"kty": "EC", "crv": "P-256", "x": b64url_encode(point[0]),
           "y": b64url_encode(point[1])}
    auth, attest, resource = broker.requests
    assert auth == ("POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": "snp",
                                             "extra-params": ""})
    assert attest[:2] == ("POST", "/kbs/v0/attest")
    assert attest[2]["runtime-data"] == {"nonce": "broker-nonce", "tee-pubkey": jwk}
    assert resource == ("GET", f"/kbs/v0/resource/{DEFAULT_RESOURCE}", None)
    [report] = reports
    assert AttestationReport.from_bytes(report).report_data == launch_report_data(
        "broker-nonce", jwk)
    page = vcpu.read(KEY_GPA, 0x1000)
    assert page[:32] == STATE_KEY and page[32:0x100] == b"\xdd" * (0x100 - 32)
    assert page[0x100:0x120] == bytes(32) and page[0x120:] == b"\xdd" * (0x1000 - 0x120)
    assert counter.read() == 9 and counter._load is not None and counter._load() == STATE_KEY
    assert counter._random is _seeds


def test_a_release_for_another_resource_is_refused(snp: Any) -> None:
    vcpu, requester = vmpl0(snp)
    with pytest.raises(IntegrityError, match=(
            r"^the broker released the key of 'default/vtpm/other', not of "
            r"'default/vtpm/state-key'$")):
        _agent(Broker(path="default/vtpm/other")).obtain_state_key(vcpu, requester, KEY_GPA,
                                                                   _seeds)
    assert _untouched(vcpu)


@pytest.mark.parametrize("challenge", [{}, {"nonce": ""}, {"nonce": 7}, {"nonce": None}])
def test_a_challenge_without_a_nonce_is_refused(snp: Any, challenge: dict[str, Any]) -> None:
    vcpu, requester = vmpl0(snp)
    broker = Broker()
    broker.answers["/kbs/v0/auth"] = _http(200, challenge)
    with pytest.raises(FormatError, match=r"^the broker's challenge has no nonce$"):
        _agent(broker).obtain_state_key(vcpu, requester, KEY_GPA, _seeds)
    assert _untouched(vcpu) and len(broker.requests) == 1


@pytest.mark.parametrize(("status", "error"), [(401, PolicyError), (403, PolicyError),
                                               (400, UsageError), (404, UsageError),
                                               (500, UsageError)])
def test_a_refusal_names_the_step_and_its_kind(snp: Any, status: int,
                                               error: type[Exception]) -> None:
    vcpu, requester = vmpl0(snp)
    broker = Broker()
    broker.answers["/kbs/v0/attest"] = _http(status, {
        "type": "https://kbs.test/problems/denied", "detail": "d" * 300})
    with pytest.raises(error, match=(
            rf"^the key broker refused POST /kbs/v0/attest \({status} denied: "
            rf"{'d' * 200}\)$")):
        _agent(broker).obtain_state_key(vcpu, requester, KEY_GPA, _seeds)
    assert _untouched(vcpu) and len(broker.requests) == 2


@pytest.mark.parametrize("status", [201, 302, 399])
def test_an_answer_other_than_200_is_refused(snp: Any, status: int) -> None:
    vcpu, requester = vmpl0(snp)
    broker = Broker()
    broker.answers[f"/kbs/v0/resource/{DEFAULT_RESOURCE}"] = _http(status, {})
    with pytest.raises(FormatError, match=(
            rf"^the key broker answered GET /kbs/v0/resource/{DEFAULT_RESOURCE} with "
            rf"{status}$")):
        _agent(broker).obtain_state_key(vcpu, requester, KEY_GPA, _seeds)
    assert _untouched(vcpu)


def test_a_refusal_without_a_type_or_detail(snp: Any) -> None:
    vcpu, requester = vmpl0(snp)
    broker = Broker()
    broker.answers["/kbs/v0/auth"] = _http(403, {})
    with pytest.raises(PolicyError, match=r"^the key broker refused POST /kbs/v0/auth "
                                          r"\(403 : \)$"):
        _agent(broker).obtain_state_key(vcpu, requester, KEY_GPA, _seeds)


def test_a_refused_report_request_stops_before_attesting(snp: Any,
                                                         monkeypatch: Any) -> None:
    vcpu, requester = vmpl0(snp)
    asked: list[int] = []

    def refused(data: bytes, vmpl: int) -> ReportResponse:
        asked.append(vmpl)
        return ReportResponse(0x16)

    monkeypatch.setattr(requester, "report", refused)
    broker = Broker()
    with pytest.raises(StatusError, match=r"^MSG_REPORT_REQ failed with status 0x16$") as err:
        _agent(broker).obtain_state_key(vcpu, requester, KEY_GPA, _seeds)
    assert err.value.code == 0x16 and asked == [0] and len(broker.requests) == 1
    assert _untouched(vcpu)


def test_without_a_counter_only_the_key_is_left(snp: Any) -> None:
    vcpu, requester = vmpl0(snp)
    agent: Callable[..., None] = _agent(Broker()).obtain_state_key
    agent(vcpu, requester, KEY_GPA, _seeds)
    assert vcpu.read(KEY_GPA, 32) == STATE_KEY and vcpu.read(SCALAR, 32) == bytes(32)


def test_a_long_foreign_path_is_named_by_its_first_80_characters(snp: Any) -> None:
    vcpu, requester = vmpl0(snp)
    path = "r/vtpm/" + "p" * 73 + "q" * 20  # 100 characters, the 81st a "q"
    with pytest.raises(IntegrityError, match=(
            rf"^the broker released the key of '{path[:80]}', not of 'default/vtpm/state-key'$")):
        _agent(Broker(path=path)).obtain_state_key(vcpu, requester, KEY_GPA, _seeds)
    assert _untouched(vcpu)
