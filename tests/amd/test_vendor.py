"""The emulated AMD PKI (57230): certificates shaped exactly like AMD's, names that say emulated."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cvm.amd import (
    DEFAULT_SEED,
    Vendor,
    derive_vcek_private_key,
    ephemeral_root,
    generate_root,
    product_named,
)
from cvm.amd.authority import ASK_SERIAL
from cvm.attestation.verifier import Evidence, TrustRoots, Verifier
from cvm.crypto import amd_ecdsa
from cvm.crypto.x509_chain import (
    check_crl,
    check_signed_by,
    load_certificates,
    parse_certificate,
    parse_crl,
)
from cvm.errors import ChainError, StateError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion
from cvm.formats.snp.vcek_extensions import VcekExtensions

TCB = TcbVersion(boot_loader=3, tee=0, snp=8, microcode=115)


def _real(vectors: Path, name: str) -> bytes:
    path = vectors / "snp/virtee-sev" / name
    return load_certificates(path.read_bytes())[0].der


def test_chain_verifies_and_is_shaped_like_amds(milan_vendor: Vendor, vectors: Path) -> None:
    ark = parse_certificate(milan_vendor.ark_certificate)
    ask = parse_certificate(milan_vendor.ask_certificate)
    chip = milan_vendor.manufacture_chip(0)
    vcek = parse_certificate(milan_vendor.vcek_certificate(chip.chip_id, TCB))
    check_signed_by(ark, ark)
    check_signed_by(ask, ark)
    check_signed_by(vcek, ask)
    real_ark = parse_certificate(_real(vectors, "src/certs/snp/builtin/milan/ark.pem"))
    real_ask = parse_certificate(_real(vectors, "src/certs/snp/builtin/milan/ask.pem"))
    real_vcek = parse_certificate(_real(vectors, "tests/certs_data/vcek_milan.der"))
    for ours, theirs in ((ark, real_ark), (ask, real_ask), (vcek, real_vcek)):
        assert ours.serial == theirs.serial
        assert ours.signature_algorithm == theirs.signature_algorithm
        assert [(oid, crit) for oid, (crit, _) in ours.extensions.items()] == [
            (oid, crit) for oid, (crit, _) in theirs.extensions.items()
        ]
        assert [name for name, _ in ours.subject] == [name for name, _ in theirs.subject]
    # Same AMD extension encodings: identical bytes for identical claims.
    real_claims = VcekExtensions.from_extensions(real_vcek.extension_values())
    ours_claims = VcekExtensions.from_extensions(vcek.extension_values())
    assert ours_claims.tcb == real_claims.tcb == TCB
    assert [len(v) for v in vcek.extension_values().values()] == [
        len(v) for v in real_vcek.extension_values().values()
    ]
    # ...and the key-usage / constraint values are AMD's own bytes.
    for oid in ("2.5.29.15", "2.5.29.19"):
        assert ark.extensions[oid] == real_ark.extensions[oid]
        assert ask.extensions[oid] == real_ask.extensions[oid]


def test_names_say_emulated(milan_vendor: Vendor) -> None:
    ark = parse_certificate(milan_vendor.ark_certificate)
    assert ark.common_name == "ARK-Milan-emulated"
    assert dict(ark.subject)["organization_name"] == "cvm emulated AMD"
    assert b".invalid/vcek/v1/Milan/crl" in ark.extensions["2.5.29.31"][1]
    assert dict(ark.subject)["organization_name"] != "Advanced Micro Devices"


def test_vcek_is_the_derived_key_and_depends_on_tcb(milan_vendor: Vendor) -> None:
    chip = milan_vendor.manufacture_chip(1)
    cert = parse_certificate(milan_vendor.vcek_certificate(chip.chip_id, TCB))
    derived = derive_vcek_private_key(chip.chip_secret, TCB, "Milan").public_key()
    assert amd_ecdsa.public_key_coordinates(cert.p384_public_key()) == (
        amd_ecdsa.public_key_coordinates(derived)
    )
    older = TcbVersion(boot_loader=3, tee=0, snp=7, microcode=115)
    other = parse_certificate(milan_vendor.vcek_certificate(chip.chip_id, older))
    assert other.spki != cert.spki
    assert milan_vendor.vcek_certificate(chip.chip_id, TCB) == cert.der  # stable
    claims = VcekExtensions.from_extensions(cert.extension_values())
    assert claims.hw_id == chip.chip_id and claims.product_name == "Milan-B0"


def test_seeded_vendor_is_reproducible(milan_vendor: Vendor) -> None:
    again = Vendor("Milan", DEFAULT_SEED)
    assert again.ark_fingerprint() == milan_vendor.ark_fingerprint()
    assert again.manufacture_chip(0) == milan_vendor.manufacture_chip(0)
    assert again.trust_anchor() == ("Milan", milan_vendor.ark_fingerprint())


def test_kds_refusals(milan_vendor: Vendor) -> None:
    with pytest.raises(UsageError):
        milan_vendor.vcek_certificate(bytes(64), TCB)
    turin_tcb = TcbVersion(microcode=9, layout=TcbLayout.TURIN)
    chip = milan_vendor.manufacture_chip(2)
    with pytest.raises(UsageError):
        milan_vendor.vcek_certificate(chip.chip_id, turin_tcb)
    milan_vendor.kds.revoke_chip(chip.chip_id)
    with pytest.raises(StateError):
        milan_vendor.vcek_certificate(chip.chip_id, TCB)
    url = milan_vendor.kds.vcek_url(chip.chip_id, TCB)
    assert url.endswith("?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115")
    with pytest.raises(UsageError):
        product_named("Naples")


def test_crl_revokes_the_ask(milan_vendor: Vendor) -> None:
    vendor = Vendor("Milan", DEFAULT_SEED, clock=milan_vendor.authority.clock)
    ark = parse_certificate(vendor.ark_certificate)
    fresh = parse_crl(vendor.crl())
    check_crl(fresh, ark, milan_vendor.authority.clock())
    assert fresh.revoked_serials == frozenset()
    vendor.revoke_ask()
    assert parse_crl(vendor.crl()).revoked_serials == {ASK_SERIAL}


def test_cert_chain_is_ask_then_ark(milan_vendor: Vendor) -> None:
    chain = load_certificates(milan_vendor.cert_chain())
    assert [c.der for c in chain] == [milan_vendor.ask_certificate, milan_vendor.ark_certificate]


@pytest.mark.interop
def test_openssl_verifies_the_emulated_chain(
    milan_vendor: Vendor, tmp_path: Path, require_tool: object
) -> None:
    openssl = require_tool("openssl")  # type: ignore[operator]
    chip = milan_vendor.manufacture_chip(0)
    files = {
        "ark.der": milan_vendor.ark_certificate,
        "ask.der": milan_vendor.ask_certificate,
        "vcek.der": milan_vendor.vcek_certificate(chip.chip_id, TCB),
    }
    for name, der in files.items():
        (tmp_path / name).write_bytes(der)
        subprocess.run(
            [openssl, "x509", "-inform", "der", "-in", str(tmp_path / name),
             "-out", str(tmp_path / name.replace(".der", ".pem"))],
            check=True, capture_output=True,
        )
    result = subprocess.run(
        [openssl, "verify", "-attime", "1780000000", "-CAfile", str(tmp_path / "ark.pem"),
         "-untrusted", str(tmp_path / "ask.pem"), str(tmp_path / "vcek.pem")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert product_named("milan").name == "Milan"


def test_no_root_comes_from_the_seed(milan_vendor: Vendor) -> None:
    """The seed makes chips reproducible; the root is this process's, never the seed's."""
    assert milan_vendor.authority.root is ephemeral_root("Milan")
    other_seed = Vendor("Milan", b"another seed")
    assert other_seed.ark_fingerprint() == milan_vendor.ark_fingerprint()
    assert other_seed.manufacture_chip(0) != milan_vendor.manufacture_chip(0)
    own = generate_root("Milan")
    assert Vendor("Milan", DEFAULT_SEED, root=own).ark_fingerprint() == own.fingerprint()
    assert own.fingerprint() != milan_vendor.ark_fingerprint()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Genoa", "Turin"])
def test_other_products(name: str, vectors: Path) -> None:
    vendor = Vendor(name, DEFAULT_SEED)
    product = product_named(name)
    chip = vendor.manufacture_chip(0)
    tcb = (
        TcbVersion(fmc=1, boot_loader=2, tee=3, snp=4, microcode=9, layout=TcbLayout.TURIN)
        if product.tcb_layout is TcbLayout.TURIN
        else TcbVersion(boot_loader=9, snp=23, microcode=72)
    )
    vcek = parse_certificate(vendor.vcek_certificate(chip.chip_id, tcb))
    check_signed_by(vcek, parse_certificate(vendor.ask_certificate))
    claims = VcekExtensions.from_extensions(vcek.extension_values())
    assert claims.tcb == tcb and claims.product_name == product.vcek_product_name
    if name == "Turin":
        assert len(claims.hw_id) == 8 and not any(chip.chip_id[8:])
        real = parse_certificate(
            (vectors / "snp/virtee-sev/tests/certs_data/vcek_turin.der").read_bytes()
        )
        assert list(vcek.extensions) == list(real.extensions)
    # A report of this product verifies end to end under the vendor's root.
    report = AttestationReport(
        version=3, cpuid_fam_id=product.cpuid_fam_id, cpuid_mod_id=product.cpuid_mod_id,
        chip_id=chip.chip_id, current_tcb=tcb, reported_tcb=tcb, committed_tcb=tcb,
        launch_tcb=tcb,
    )
    key = derive_vcek_private_key(chip.chip_secret, tcb, name)
    data = report.with_signature(*amd_ecdsa.sign(key, report.signed_bytes())).to_bytes()
    evidence = Evidence(
        data, vcek.der, vendor.ask_certificate, vendor.ark_certificate, vendor.crl()
    )
    verifier = Verifier(TrustRoots.of([vendor.trust_anchor()]))
    assert verifier.verify(evidence).report.reported_tcb == tcb
    with pytest.raises(ChainError):
        Verifier(TrustRoots.amd()).verify(evidence)


@pytest.mark.interop
def test_openssl_checks_the_ask_against_the_emulated_crl(tmp_path: Path,
                                                         require_tool: object) -> None:
    """The ARK's CRL (RSASSA-PSS, as AMD's KDS serves it) is one OpenSSL reads, verifies and
    applies: the ASK passes before it is revoked and is refused after."""
    openssl = require_tool("openssl")  # type: ignore[operator]
    vendor = Vendor("Milan", DEFAULT_SEED, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def pem(name: str, der: bytes, kind: str = "x509") -> Path:
        (tmp_path / f"{name}.der").write_bytes(der)
        subprocess.run([openssl, kind, "-inform", "der", "-in", str(tmp_path / f"{name}.der"),
                        "-out", str(tmp_path / f"{name}.pem")], check=True, capture_output=True)
        return tmp_path / f"{name}.pem"

    ark, ask = pem("ark", vendor.ark_certificate), pem("ask", vendor.ask_certificate)

    def verify() -> subprocess.CompletedProcess[str]:
        crl = pem("crl", vendor.crl(), "crl")
        return subprocess.run([openssl, "verify", "-attime", "1767312000", "-crl_check",
                               "-CAfile", str(ark), "-CRLfile", str(crl), str(ask)],
                              capture_output=True, text=True, check=False)

    assert verify().returncode == 0, verify().stderr
    vendor.revoke_ask()
    refused = verify()
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
