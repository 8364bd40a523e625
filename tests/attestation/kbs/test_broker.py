"""The broker's logic without HTTP: encryption at rest, collateral, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.attestation.kbs.broker import Broker, ProblemError, resource_path
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.collateral import CollateralCache
from cvm.attestation.verifier.trust import TrustRoots
from cvm.errors import IntegrityError, UsageError
from cvm.formats.snp.tcb_version import TcbVersion


@pytest.fixture
def broker(tmp_path: Path) -> Broker:
    return Broker(Storage(f"sqlite:///{tmp_path / 'kbs.db'}"), bytes(range(32)),
                  TrustRoots.amd())


def test_secrets_are_bound_to_their_name_and_the_kek(broker: Broker, tmp_path: Path) -> None:
    broker.set_secret("a/b/c", b"secret one")
    sealed = broker.storage.secret("a/b/c")
    assert sealed is not None and b"secret one" not in sealed.ciphertext
    broker.storage.put_secret("a/b/moved", sealed)  # a row moved to another name
    with pytest.raises(IntegrityError):
        broker._open("secret:a/b/moved", sealed)
    assert broker._open("secret:a/b/c", sealed) == b"secret one"
    with pytest.raises(UsageError, match="does not open"):  # another KEK opens nothing
        Broker(broker.storage, bytes(32), TrustRoots.amd())


def test_the_token_key_is_shared_through_the_database(broker: Broker) -> None:
    again = Broker(broker.storage, bytes(range(32)), TrustRoots.amd())
    assert again.token_key.public_jwk() == broker.token_key.public_jwk()
    token = broker.token_key.sign_token({"a": 1}, broker.token_key_id())
    assert again.token_key.verify_token(token)[1] == {"a": 1}


def test_arguments(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        Broker(Storage(f"sqlite:///{tmp_path / 'x.db'}"), b"short", TrustRoots.amd())
    with pytest.raises(UsageError):
        Storage("sqlite:///:memory:")
    with pytest.raises(ProblemError) as refused:
        resource_path("a", "b/../c", "d")
    assert refused.value.status == 404


def test_collateral_cache(tmp_path: Path) -> None:
    cache = CollateralCache(tmp_path / "collateral")
    tcb = TcbVersion(boot_loader=4, snp=22, microcode=213)
    assert cache.vcek(b"\x01" * 64, tcb) is None
    cache.put_vcek(b"\x01" * 64, tcb, b"der")
    assert cache.vcek(b"\x01" * 64, tcb) == b"der"
    assert cache.vcek(b"\x02" * 64, tcb) is None
    cache.put_crl("Milan", b"crl")
    assert cache.crl("Milan") == b"crl" and cache.crl("Genoa") is None
    with pytest.raises(UsageError):
        cache.put_crl("Naples", b"crl")


def test_expired_sessions_and_old_reports_are_swept(tmp_path: Path) -> None:
    now = [1000.0]
    broker = Broker(Storage(f"sqlite:///{tmp_path / 'kbs.db'}"), bytes(range(32)),
                    TrustRoots.amd(), clock=lambda: now[0])
    session, _ = broker.auth(b'{"version": "0.4.0", "tee": "snp"}')

    def record_report() -> bool:
        row = broker.storage.audit_row("attest", "denied", [], session_id=session, at=now[0])
        return broker.storage.finish_attestation(session, False, {}, None, now[0], now[0], row,
                                                 "r1")

    assert record_report()
    assert not record_report()  # a report is presented once
    now[0] += 59
    broker.auth(b'{"version": "0.4.0", "tee": "snp"}')  # not yet: one sweep a minute
    assert broker.storage.session(session) is not None
    now[0] += broker.settings.session_ttl_seconds * 2 + 60
    broker.auth(b'{"version": "0.4.0", "tee": "snp"}')
    assert broker.storage.session(session) is None
    assert record_report()  # forgotten, and harmless
