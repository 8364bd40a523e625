"""The emulated KDS, products and vendor (AMD 57230): chips, URLs, VCEKs and refusals, each
pinned. Roots come from ``fresh_keys``."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cvm.amd import Vendor, generate_root, product_named
from cvm.amd.authority import ASK_SERIAL, RootAuthority, emulated_name
from cvm.amd.kds import ChipFuses
from cvm.amd.product import PRODUCTS
from cvm.crypto import amd_ecdsa
from cvm.crypto.vcek_key import derive_vcek_private_key
from cvm.crypto.x509_build import DistinguishedName
from cvm.crypto.x509_chain import (
    check_signed_by,
    load_certificates,
    parse_certificate,
    parse_crl,
)
from cvm.errors import StateError, UsageError
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion
from cvm.formats.snp.vcek_extensions import VcekExtensions

ISSUED = datetime(2026, 2, 1, tzinfo=UTC)
SEED = b"kds checks"
MILAN_TCB = TcbVersion(boot_loader=3, tee=0, snp=8, microcode=115)
TURIN_TCB = TcbVersion(fmc=1, boot_loader=2, tee=3, snp=4, microcode=9, layout=TcbLayout.TURIN)


@pytest.fixture
def milan(fresh_keys: list[int]) -> Vendor:
    return Vendor("Milan", SEED, clock=lambda: ISSUED, root=generate_root("Milan"))


@pytest.fixture
def turin(fresh_keys: list[int]) -> Vendor:
    return Vendor("turin", SEED, clock=lambda: ISSUED, root=generate_root("Turin"))


def _names(name: DistinguishedName) -> tuple[tuple[str, str], ...]:
    return (
        ("organizational_unit_name", name.organizational_unit_name),
        ("country_name", name.country_name), ("locality_name", name.locality_name),
        ("state_or_province_name", name.state_or_province_name),
        ("organization_name", name.organization_name), ("common_name", name.common_name),
    )


def test_the_products() -> None:
    table = {
        name: (p.vcek_product_name, p.cpuid_fam_id, p.cpuid_mod_id, p.cpuid_step,
               p.tcb_layout, p.chip_id_size, p.ark_common_name, p.ask_common_name, p.crl_url)
        for name, p in PRODUCTS.items()
    }
    base = "https://kds.cvm-emulated.invalid/vcek/v1"
    assert table == {
        "Milan": ("Milan-B0", 0x19, 0x01, 0, TcbLayout.MILAN_GENOA, 64, "ARK-Milan-emulated",
                  "SEV-Milan-emulated", f"{base}/Milan/crl"),
        "Genoa": ("Genoa-B0", 0x19, 0x11, 0, TcbLayout.MILAN_GENOA, 64, "ARK-Genoa-emulated",
                  "SEV-Genoa-emulated", f"{base}/Genoa/crl"),
        "Turin": ("Turin", 0x1A, 0x02, 0, TcbLayout.TURIN, 8, "ARK-Turin-emulated",
                  "SEV-Turin-emulated", f"{base}/Turin/crl"),
    }
    assert product_named("GENOA") is PRODUCTS["Genoa"]
    with pytest.raises(UsageError) as caught:
        product_named("Naples")
    assert str(caught.value) == "unknown product 'Naples' (know Milan, Genoa, Turin)"


def test_chips_come_from_the_seed(milan: Vendor, turin: Vendor) -> None:
    for vendor, index, size in ((milan, 3, 64), (turin, 0, 8)):
        chip = vendor.manufacture_chip(index)
        label = f"chip/{vendor.product.name}/{index}".encode()
        secret = hashlib.shake_256(label + b"\x00" + SEED).digest(64)
        chip_id = hashlib.sha512(b"cvm emulated CHIP_ID\x00" + secret).digest()
        assert chip == ChipFuses(vendor.product.name, chip_id[:size].ljust(64, b"\x00"), secret)
        assert vendor.kds.hw_id(chip.chip_id) == chip_id[:size]
    assert milan.manufacture_chip() == milan.manufacture_chip(0)
    assert milan.manufacture_chip(0) != milan.manufacture_chip(1)


def test_a_chips_secret_is_never_printed(milan: Vendor) -> None:
    chip = milan.manufacture_chip(0)
    assert repr(chip) == f"ChipFuses(product='Milan', chip_id={chip.chip_id.hex()[:16]}...)"
    assert chip.chip_secret.hex()[:8] not in repr(chip)


def test_the_vcek_urls(milan: Vendor, turin: Vendor) -> None:
    chip = milan.manufacture_chip(0)
    assert milan.kds.vcek_url(chip.chip_id, MILAN_TCB) == (
        f"https://kds.cvm-emulated.invalid/vcek/v1/Milan/{chip.chip_id.hex()}"
        "?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
    )
    chip = turin.manufacture_chip(0)
    assert turin.kds.vcek_url(chip.chip_id, TURIN_TCB) == (
        f"https://kds.cvm-emulated.invalid/vcek/v1/Turin/{chip.chip_id[:8].hex()}"
        "?fmcSPL=01&blSPL=02&teeSPL=03&snpSPL=04&ucodeSPL=09"
    )


def test_the_kds_refuses_unknown_and_revoked_chips_and_foreign_tcbs(
    milan: Vendor, turin: Vendor
) -> None:
    with pytest.raises(UsageError) as caught:
        milan.vcek_certificate(bytes(range(64)), MILAN_TCB)
    assert str(caught.value) == "the KDS knows no Milan chip 0001020304050607..."
    chip = milan.manufacture_chip(4)
    with pytest.raises(UsageError) as caught:
        milan.vcek_certificate(chip.chip_id, TURIN_TCB)
    assert str(caught.value) == "Milan TCBs use the MILAN_GENOA layout"
    with pytest.raises(UsageError) as caught:
        turin.vcek_certificate(turin.manufacture_chip(0).chip_id, MILAN_TCB)
    assert str(caught.value) == "Turin TCBs use the TURIN layout"
    issued = milan.vcek_certificate(chip.chip_id, MILAN_TCB)
    milan.kds.revoke_chip(bytearray(chip.chip_id))
    for tcb in (MILAN_TCB, TcbVersion(boot_loader=1)):  # even a VCEK issued before
        with pytest.raises(StateError) as caught:
            milan.vcek_certificate(bytearray(chip.chip_id), tcb)
        assert str(caught.value) == (
            f"the KDS no longer issues VCEKs for chip {chip.chip_id.hex()[:16]}..."
        )
    assert issued and milan.vcek_certificate(milan.manufacture_chip(5).chip_id, MILAN_TCB)


def test_the_vcek_certificate(milan: Vendor, vectors: Path) -> None:
    chip = milan.manufacture_chip(0)
    vcek = parse_certificate(milan.vcek_certificate(bytearray(chip.chip_id), MILAN_TCB))
    ask = parse_certificate(milan.ask_certificate)
    check_signed_by(vcek, ask)
    real = parse_certificate(
        (vectors / "snp/virtee-sev/tests/certs_data/vcek_milan.der").read_bytes()
    )
    assert vcek.serial == 0 == real.serial
    assert vcek.issuer == ask.subject == _names(emulated_name("SEV-Milan-emulated"))
    assert vcek.subject == _names(emulated_name("SEV-VCEK"))
    assert real.common_name == "SEV-VCEK"
    assert (vcek.not_before, vcek.not_after) == (ISSUED, ISSUED + timedelta(days=2557))
    assert [critical for critical, _ in vcek.extensions.values()] == [False] * 11
    claims = VcekExtensions("Milan-B0", MILAN_TCB, chip.chip_id)
    assert list(vcek.extension_values().items()) == claims.to_extensions()
    derived = derive_vcek_private_key(chip.chip_secret, MILAN_TCB, "Milan")
    assert amd_ecdsa.public_key_coordinates(vcek.p384_public_key()) == (
        amd_ecdsa.public_key_coordinates(derived.public_key())
    )
    assert amd_ecdsa.public_key_coordinates(
        milan.kds.vcek_private_key(chip.chip_id, MILAN_TCB).public_key()
    ) == amd_ecdsa.public_key_coordinates(derived.public_key())


def test_a_turin_vcek_names_the_first_8_bytes(turin: Vendor) -> None:
    chip = turin.manufacture_chip(0)
    vcek = parse_certificate(turin.vcek_certificate(chip.chip_id, TURIN_TCB))
    claims = VcekExtensions.from_extensions(vcek.extension_values())
    assert claims == VcekExtensions("Turin", TURIN_TCB, chip.chip_id[:8])


def test_vceks_are_issued_once_per_chip_and_tcb(fresh_keys: list[int]) -> None:
    times = iter([ISSUED, ISSUED + timedelta(days=1), ISSUED + timedelta(days=2)])
    vendor = Vendor("Milan", SEED, clock=lambda: next(times), root=generate_root("Milan"))
    chip, other = vendor.manufacture_chip(0), vendor.manufacture_chip(1)
    first = vendor.vcek_certificate(chip.chip_id, MILAN_TCB)
    assert vendor.vcek_certificate(chip.chip_id, MILAN_TCB) == first  # not issued again
    older = TcbVersion(boot_loader=3, tee=0, snp=7, microcode=115)
    at_older = parse_certificate(vendor.vcek_certificate(chip.chip_id, older))
    assert VcekExtensions.from_extensions(at_older.extension_values()).tcb == older
    assert at_older.not_before == ISSUED + timedelta(days=1)
    for_other = parse_certificate(vendor.vcek_certificate(other.chip_id, MILAN_TCB))
    assert VcekExtensions.from_extensions(for_other.extension_values()).hw_id == other.chip_id


def test_the_cert_chain_is_pem_of_the_ask_then_the_ark(milan: Vendor) -> None:
    chain = milan.cert_chain()
    expected = b""
    for der in (milan.ask_certificate, milan.ark_certificate):
        body = base64.b64encode(der)
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        expected += b"\n".join(
            [b"-----BEGIN CERTIFICATE-----", *lines, b"-----END CERTIFICATE-----"]
        ) + b"\n"
    assert chain == expected
    assert [c.der for c in load_certificates(chain)] == [
        milan.ask_certificate, milan.ark_certificate
    ]


def test_the_vendor(milan: Vendor) -> None:
    fingerprint = hashlib.sha256(milan.ark_certificate).hexdigest()
    assert milan.ark_fingerprint() == fingerprint == milan.authority.root.fingerprint()
    assert milan.trust_anchor() == ("Milan", fingerprint)
    assert milan.kds.product is milan.product is milan.authority.product
    assert milan.ask_certificate == milan.authority.root.ask_certificate
    assert parse_crl(milan.crl()).revoked_serials == frozenset()
    assert parse_crl(milan.kds.crl()).revoked_serials == frozenset()
    milan.revoke_ask()
    assert parse_crl(milan.crl()).revoked_serials == {ASK_SERIAL}


def test_the_vendor_hands_its_root_and_random_to_its_authority(fresh_keys: list[int]) -> None:
    """Milan by default; the root and the CRL's salt source are the ones given."""
    asked: list[int] = []

    def random(size: int) -> bytes:
        asked.append(size)
        return bytes(size)

    root = generate_root("Milan")
    vendor = Vendor(seed=SEED, clock=lambda: ISSUED, random=random, root=root)
    assert vendor.product.name == "Milan" and vendor.authority.root is root
    vendor.crl()
    assert asked == [48]
    assert RootAuthority(root=root).product.name == "Milan"
