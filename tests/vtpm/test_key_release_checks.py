"""The SVSM's side of the state-key release, step by step: the ephemeral scalar in its key page,
the report that binds the relying party's nonce and the public point, the released key's size,
and the scalar wiped whatever happens."""

from __future__ import annotations

from typing import Any

import pytest
from tests.vtpm.svsm_vmpl0 import vmpl0

from cvm.crypto import amd_ecdsa
from cvm.crypto.drbg import SeededRandom
from cvm.crypto.key_transport import CURVE, Point, public_point, report_data, wrap
from cvm.crypto.tpm_keys import ecc_from_seed
from cvm.errors import IntegrityError, PolicyError, StatusError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.report_request import ReportResponse
from cvm.guest.svsm.key_release import SCALAR_OFFSET, obtain_state_key
from cvm.guest.svsm.svsm import Svsm, SvsmLayout
from cvm.vtpm.state_file import KeySource, MonotonicCounter, ReleasedKeyProvider, open_state

LAYOUT = SvsmLayout()
KEY, SCALAR = LAYOUT.key_gpa, LAYOUT.key_gpa + 0x100
SEED = bytes(range(100, 148))
STATE_KEY = bytes(range(1, 33))


class Broker:
    """A relying party that checks the report's signature and binding, and wraps ``secret``
    (to ``to``, else to the point it was given)."""

    def __init__(self, snp: Any, vcpu: Any, secret: bytes = STATE_KEY,
                 to: Point | None = None, refuse: bool = False) -> None:
        self.snp, self.vcpu, self.secret, self.to, self.refuse = snp, vcpu, secret, to, refuse
        self.nonce = bytes(range(64))[::-1]
        self.scalar_at_challenge = b""
        self.released: list[tuple[bytes, bytes, Point]] = []

    def challenge(self) -> bytes:
        self.scalar_at_challenge = self.vcpu.read(SCALAR, 48)
        return self.nonce

    def release(self, report: bytes, nonce: bytes, public: Point) -> bytes:
        self.released.append((report, nonce, public))
        parsed = AttestationReport.from_bytes(report)
        key = self.snp.psp.vcek_public_key(parsed.reported_tcb)
        amd_ecdsa.verify(key, parsed.signed_bytes(), parsed.signature_r, parsed.signature_s)
        assert parsed.report_data == report_data(nonce, public) and parsed.vmpl == 0
        if self.refuse:
            raise PolicyError("launch measurement not accepted")
        return wrap(self.to or public, self.secret, lambda n: b"\x42" * n)


def _seeds(size: int) -> bytes:
    assert size == 48  # one P-384 scalar's worth
    return SEED


def _expected_scalar() -> bytes:
    return ecc_from_seed(CURVE, SEED, b"svsm state key release")


def test_the_released_key_lands_in_the_key_page_and_the_scalar_is_wiped(snp: Any) -> None:
    vcpu, requester = vmpl0(snp)
    broker = Broker(snp, vcpu)
    obtain_state_key(vcpu, requester, KEY, broker, _seeds)
    assert SCALAR_OFFSET == 0x100 and broker.scalar_at_challenge == _expected_scalar()
    [(report, nonce, public)] = broker.released
    assert nonce == broker.nonce and public == public_point(_expected_scalar())
    assert AttestationReport.from_bytes(report).report_data == report_data(broker.nonce, public)
    page = vcpu.read(KEY, 0x1000)
    assert page[:32] == STATE_KEY and page[32:0x100] == b"\xdd" * (0x100 - 32)
    assert page[0x100:0x130] == bytes(48) and page[0x130:] == b"\xdd" * (0x1000 - 0x130)


@pytest.mark.parametrize("size", [16, 31, 33, 48])
def test_a_key_of_another_size_is_refused_and_not_written(snp: Any, size: int) -> None:
    vcpu, requester = vmpl0(snp)
    with pytest.raises(UsageError, match=rf"^the relying party released a {size}-byte state key$"):
        obtain_state_key(vcpu, requester, KEY, Broker(snp, vcpu, secret=b"k" * size), _seeds)
    assert vcpu.read(KEY, 32) == b"\xdd" * 32 and vcpu.read(SCALAR, 48) == bytes(48)


def test_a_refusing_relying_party_leaves_no_key_and_no_scalar(snp: Any) -> None:
    vcpu, requester = vmpl0(snp)
    broker = Broker(snp, vcpu, refuse=True)
    with pytest.raises(PolicyError, match="not accepted"):
        obtain_state_key(vcpu, requester, KEY, broker, _seeds)
    assert broker.scalar_at_challenge == _expected_scalar()
    assert vcpu.read(KEY, 32) == b"\xdd" * 32 and vcpu.read(SCALAR, 48) == bytes(48)


def test_a_key_wrapped_to_another_point_does_not_open(snp: Any) -> None:
    vcpu, requester = vmpl0(snp)
    other = public_point(ecc_from_seed(CURVE, bytes(48), b"someone else"))
    with pytest.raises(IntegrityError):
        obtain_state_key(vcpu, requester, KEY, Broker(snp, vcpu, to=other), _seeds)
    assert vcpu.read(KEY, 32) == b"\xdd" * 32 and vcpu.read(SCALAR, 48) == bytes(48)


def test_a_refused_report_request_stops_before_the_relying_party(snp: Any,
                                                                 monkeypatch: Any) -> None:
    vcpu, requester = vmpl0(snp)
    asked: list[tuple[bytes, int]] = []

    def refused(data: bytes, vmpl: int) -> ReportResponse:
        asked.append((data, vmpl))
        return ReportResponse(0x16)

    monkeypatch.setattr(requester, "report", refused)
    broker = Broker(snp, vcpu)
    with pytest.raises(StatusError, match=r"^MSG_REPORT_REQ failed with status 0x16$") as error:
        obtain_state_key(vcpu, requester, KEY, broker, _seeds)
    assert error.value.code == 0x16 and broker.released == []
    assert asked == [(report_data(broker.nonce, public_point(_expected_scalar())), 0)]
    assert vcpu.read(KEY, 32) == b"\xdd" * 32 and vcpu.read(SCALAR, 48) == bytes(48)


def test_an_svsm_started_with_a_relying_party_seals_with_the_released_key(snp: Any) -> None:
    """``Svsm.start(broker=...)``: the release runs at VMPL0 with the SVSM's channel, key page
    and randomness; the state key is the released one, read from the key page, and a state
    sealed with it opens only with it."""
    launched = snp.launch()
    vcpu, counter = launched.guest.vcpus[0], MonotonicCounter()
    broker = Broker(snp, vcpu)
    svsm = Svsm.start(vcpu, launched.secrets_gpa, counter, SeededRandom(b"svsm"), broker=broker)
    [(_, nonce, public)] = broker.released
    seed = SeededRandom(b"svsm")(48)
    scalar = ecc_from_seed(CURVE, seed, b"svsm state key release")
    assert nonce == broker.nonce and public == public_point(scalar)
    assert svsm.keys.source is KeySource.BROKER_RELEASED
    assert svsm.at_vmpl0(lambda: vcpu.read(KEY, 32)) == STATE_KEY
    assert svsm.at_vmpl0(svsm.keys.state_key) == STATE_KEY
    sealed = svsm.seal_state()
    assert open_state(sealed, ReleasedKeyProvider(STATE_KEY), counter) == svsm.read_state()
    with pytest.raises(IntegrityError):
        open_state(sealed, ReleasedKeyProvider(bytes(32)[:-1] + b"\x01"), counter)
