"""The emulated ARK, ASK and CRL, field by field (AMD 57230 chain; the real Milan ARK and ASK
are the model), and what a ``RootAuthority`` refuses. Keys come from ``fresh_keys``."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from cvm.amd import authority
from cvm.amd.authority import (
    ARK_SERIAL,
    ASK_SERIAL,
    EmulatedRoot,
    RootAuthority,
    emulated_name,
    generate_root,
    system_clock,
)
from cvm.amd.product import product_named
from cvm.crypto.drbg import SeededRandom
from cvm.crypto.rsa_pss import public_key_der
from cvm.crypto.x509_build import key_identifier
from cvm.crypto.x509_chain import (
    Certificate,
    check_crl,
    check_signed_by,
    load_certificates,
    parse_certificate,
    parse_crl,
)
from cvm.errors import UsageError

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _subject(common_name: str) -> tuple[tuple[str, str], ...]:
    """AMD's attributes in AMD's order, with the emulated organisation."""
    return (
        ("organizational_unit_name", "cvm emulation (not Advanced Micro Devices)"),
        ("country_name", "US"), ("locality_name", "Santa Clara"),
        ("state_or_province_name", "CA"), ("organization_name", "cvm emulated AMD"),
        ("common_name", common_name),
    )


def _real(vectors: Path, role: str) -> Certificate:
    path = vectors / f"snp/virtee-sev/src/certs/snp/builtin/milan/{role}.pem"
    return load_certificates(path.read_bytes())[0]


@pytest.fixture
def root(fresh_keys: list[int]) -> EmulatedRoot:
    return generate_root("Milan")


def test_a_root_is_two_fresh_rsa_4096_keys(fresh_keys: list[int]) -> None:
    made = generate_root(product_named("Genoa"))
    assert fresh_keys == [4096, 4096]
    assert made.product.name == "Genoa"
    assert made.ark_key.private_numbers() != made.ask_key.private_numbers()
    assert made.fingerprint() == hashlib.sha256(made.ark_certificate).hexdigest()


def test_the_salts_come_from_the_random_source_given(fresh_keys: list[int]) -> None:
    asked: list[int] = []

    def random(size: int) -> bytes:
        asked.append(size)
        return bytes(size)

    made = generate_root("Milan", random)
    assert asked == [48, 48]
    ark = parse_certificate(made.ark_certificate)
    check_signed_by(ark, ark)
    check_signed_by(parse_certificate(made.ask_certificate), ark)


def test_the_ark_is_shaped_like_amds(root: EmulatedRoot, vectors: Path) -> None:
    ark, real = parse_certificate(root.ark_certificate), _real(vectors, "ark")
    check_signed_by(ark, ark)
    assert ark.serial == ARK_SERIAL == real.serial
    assert ark.subject == ark.issuer == _subject("ARK-Milan-emulated")
    assert ark.not_before == datetime(2024, 1, 1, tzinfo=UTC)
    assert ark.not_after == datetime(2048, 12, 31, tzinfo=UTC)
    assert ark.not_after - ark.not_before == real.not_after - real.not_before  # 9131 days
    assert ark.signature_algorithm == real.signature_algorithm
    assert [(oid, critical) for oid, (critical, _) in ark.extensions.items()] == [
        (oid, critical) for oid, (critical, _) in real.extensions.items()
    ]
    for oid in ("2.5.29.15", "2.5.29.19"):  # key usage, basic constraints: AMD's bytes
        assert ark.extensions[oid] == real.extensions[oid]
    assert ark.extensions["2.5.29.14"][1] == b"\x04\x14" + key_identifier(ark.spki)
    assert ark.spki == public_key_der(root.ark_key.public_key())
    assert ark.extensions["2.5.29.31"][1] == (
        bytes.fromhex("303a3038a036a0348632")
        + b"https://kds.cvm-emulated.invalid/vcek/v1/Milan/crl"
    )


def test_the_ask_is_shaped_like_amds(root: EmulatedRoot, vectors: Path) -> None:
    ark = parse_certificate(root.ark_certificate)
    ask, real = parse_certificate(root.ask_certificate), _real(vectors, "ask")
    check_signed_by(ask, ark)
    assert ask.serial == ASK_SERIAL == real.serial
    assert ask.issuer == ark.subject
    assert ask.subject == _subject("SEV-Milan-emulated")
    assert ask.not_before == datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert ask.not_after == datetime(2048, 12, 31, 1, tzinfo=UTC)
    assert ask.not_after - ask.not_before == real.not_after - real.not_before
    assert ask.signature_algorithm == real.signature_algorithm
    assert [(oid, critical) for oid, (critical, _) in ask.extensions.items()] == [
        (oid, critical) for oid, (critical, _) in real.extensions.items()
    ]
    for oid in ("2.5.29.15", "2.5.29.19"):
        assert ask.extensions[oid] == real.extensions[oid]
    assert ask.extensions["2.5.29.14"][1] == b"\x04\x14" + key_identifier(ask.spki)
    assert ask.extensions["2.5.29.35"][1] == b"\x30\x16\x80\x14" + key_identifier(ark.spki)
    assert ask.spki == public_key_der(root.ask_key.public_key())
    assert ask.extensions["2.5.29.31"] == ark.extensions["2.5.29.31"]


def test_names_and_clock() -> None:
    name = emulated_name("X")
    assert (name.common_name, name.organization_name, name.organizational_unit_name) == (
        "X", "cvm emulated AMD", "cvm emulation (not Advanced Micro Devices)"
    )
    now = system_clock()
    assert now.tzinfo is UTC and now.microsecond == 0


def test_an_authority_takes_only_a_root_of_its_product(root: EmulatedRoot) -> None:
    with pytest.raises(UsageError) as caught:
        RootAuthority("Genoa", root=root)
    assert str(caught.value) == "the root is Milan's, not Genoa's"
    held = RootAuthority(product_named("Milan"), root=root)
    assert held.root is root and held.product.name == "Milan"
    assert (held.ark_key, held.ark_certificate) == (root.ark_key, root.ark_certificate)
    assert (held.ask_key, held.ask_certificate) == (root.ask_key, root.ask_certificate)
    assert held.ark_name == emulated_name("ARK-Milan-emulated")
    assert held.ask_name == emulated_name("SEV-Milan-emulated")


def test_without_a_root_the_authority_uses_the_processs(
    root: EmulatedRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def ephemeral(product: str) -> EmulatedRoot:
        asked.append(product)
        return root

    monkeypatch.setattr(authority, "ephemeral_root", ephemeral)
    assert RootAuthority("milan").root is root
    assert asked == ["Milan"]


def _crl(held: RootAuthority) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(held.crl())


def test_the_crl(root: EmulatedRoot) -> None:
    hours = (0, 1, 3, 2)  # revoke 7, revoke the ASK, revoke 7 again, make the CRL
    times = iter([NOW + timedelta(hours=hour) for hour in hours])
    held = RootAuthority("Milan", b"seed", clock=lambda: next(times), root=root)
    held.revoke(7)
    held.revoke()
    held.revoke(7)  # a second revocation keeps the first date
    der = held.crl()
    revocations = parse_crl(der)
    ark = parse_certificate(root.ark_certificate)
    check_crl(revocations, ark, NOW + timedelta(hours=3))
    assert revocations.issuer == ark.subject
    assert revocations.this_update == NOW + timedelta(hours=2)
    assert revocations.next_update == NOW + timedelta(days=7, hours=2)
    crl = x509.load_der_x509_crl(der)
    assert [(entry.serial_number, entry.revocation_date_utc) for entry in crl] == [
        (7, NOW), (ASK_SERIAL, NOW + timedelta(hours=1))
    ]
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    key_id = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert number == 1 and key_id.value.key_identifier == key_identifier(ark.spki)
    assert held.ark_key_id == key_identifier(ark.spki)
    times = iter([NOW])
    second = _crl(held).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert second == 2


def test_a_new_crl_revokes_nothing(root: EmulatedRoot) -> None:
    held = RootAuthority("Milan", clock=lambda: NOW, root=root)
    assert parse_crl(held.crl()).revoked_serials == frozenset()


def test_crl_salts_follow_the_seed(root: EmulatedRoot) -> None:
    def crl(seed: bytes, random: SeededRandom | None = None) -> bytes:
        return RootAuthority("Milan", seed, lambda: NOW, random, root).crl()

    assert crl(b"one") == crl(b"one") == crl(b"two", SeededRandom(b"one", b"vendor/salts"))
    assert crl(b"one") != crl(b"two")
    assert RootAuthority("Milan", bytearray(b"s"), root=root).seed == b"s"
    assert type(RootAuthority("Milan", bytearray(b"s"), root=root).seed) is bytes
