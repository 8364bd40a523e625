"""Certificates and CRLs from cvm's DER encoder (``crypto/x509_build.py``) as OpenSSL reads
them: a CA and a leaf with AMD's extensions, ``openssl verify`` of the chain, and a CRL of the
CA that revokes the leaf (``-crl_check``) or revokes nothing."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cvm.crypto.rsa_pss import generate_private_key, public_key_der
from cvm.crypto.x509_build import (
    OID_AUTHORITY_KEY_ID,
    OID_BASIC_CONSTRAINTS,
    OID_CRL_DISTRIBUTION_POINTS,
    OID_KEY_USAGE,
    OID_SUBJECT_KEY_ID,
    DistinguishedName,
    Extension,
    authority_key_id,
    basic_constraints_ca,
    crl_distribution_point,
    der_octet_string,
    key_identifier,
    key_usage,
    sign_rsassa_pss,
    tbs_cert_list,
    tbs_certificate,
)

pytestmark = pytest.mark.interop
Tool = Callable[[str], str]
START = datetime(2024, 1, 1, tzinfo=UTC)
AT = "1780000000"  # 2026-05-28, inside every validity period below
URL = "https://kdsintf.amd.com/vcek/v1/Milan/crl"


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, require_tool: Tool) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("x509-build")
    ca_key = generate_private_key(b"x509 build interop", "ca", 2048)
    leaf_key = generate_private_key(b"x509 build interop", "leaf", 2048)
    ca_spki, leaf_spki = public_key_der(ca_key.public_key()), public_key_der(leaf_key.public_key())
    ca_name, leaf_name = DistinguishedName("ARK-Test"), DistinguishedName("ASK-Test")
    ca_id = key_identifier(ca_spki)
    ca = sign_rsassa_pss(tbs_certificate(
        serial=0x10000, issuer=ca_name, subject=ca_name, not_before=START,
        not_after=datetime(2049, 12, 31, tzinfo=UTC), spki_der=ca_spki, extensions=[
            Extension(OID_KEY_USAGE, key_usage(cert_sign=True, crl_sign=True), True),
            Extension(OID_SUBJECT_KEY_ID, der_octet_string(ca_id)),
            Extension(OID_BASIC_CONSTRAINTS, basic_constraints_ca(None), True)],
    ), ca_key, bytes(48))
    leaf = sign_rsassa_pss(tbs_certificate(
        serial=0x10001, issuer=ca_name, subject=leaf_name, not_before=START,
        not_after=datetime(2060, 1, 1, tzinfo=UTC), spki_der=leaf_spki, extensions=[
            Extension(OID_SUBJECT_KEY_ID, der_octet_string(key_identifier(leaf_spki))),
            Extension(OID_AUTHORITY_KEY_ID, authority_key_id(ca_id)),
            Extension(OID_BASIC_CONSTRAINTS, basic_constraints_ca(0), True),
            Extension(OID_KEY_USAGE, key_usage(cert_sign=True, crl_sign=False), True),
            Extension(OID_CRL_DISTRIBUTION_POINTS, crl_distribution_point(URL))],
    ), ca_key, bytes(48))
    files = {"ca": ca, "leaf": leaf}
    for name, revoked in (("crl-revoking", [(0x10001, START + timedelta(days=1))]),
                          ("crl-empty", [])):
        files[name] = sign_rsassa_pss(tbs_cert_list(
            issuer=ca_name, this_update=START, next_update=datetime(2050, 6, 1, tzinfo=UTC),
            revoked=revoked, crl_number=3, authority_key=ca_id), ca_key, bytes(48))
    paths = {}
    for name, der in files.items():
        paths[name] = folder / f"{name}.der"
        paths[name].write_bytes(der)
        kind = "crl" if name.startswith("crl") else "x509"
        done = _run(require_tool("openssl"), kind, "-inform", "DER", "-in", paths[name],
                    "-out", folder / f"{name}.pem")
        assert done.returncode == 0, done.stderr
        paths[f"{name}.pem"] = folder / f"{name}.pem"
    return paths


def test_openssl_prints_the_extensions(pki: dict[str, Path], require_tool: Tool) -> None:
    done = _run(require_tool("openssl"), "x509", "-inform", "DER", "-in", pki["leaf"],
                "-noout", "-text")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "Version: 3 (0x2)" in text
    assert "Serial Number: 65537 (0x10001)" in text
    assert "Signature Algorithm: rsassaPss" in text
    assert "Hash Algorithm: sha384 Mask Algorithm: mgf1 with sha384 Salt Length: 0x30" in text
    assert "Not After : Jan 1 00:00:00 2060 GMT" in text
    assert "Salt Length: 0x30 Trailer Field: 0x01" in text
    assert ("Subject: OU = Engineering, C = US, L = Santa Clara, ST = CA, "
            "O = Advanced Micro Devices, CN = ASK-Test") in text
    assert "X509v3 Basic Constraints: critical CA:TRUE, pathlen:0" in text
    assert "X509v3 Key Usage: critical Certificate Sign X509v3" in text
    assert f"X509v3 CRL Distribution Points: Full Name: URI:{URL}" in text


def test_openssl_verifies_the_chain_and_reads_the_crls(pki: dict[str, Path],
                                                       require_tool: Tool) -> None:
    openssl = require_tool("openssl")
    plain = _run(openssl, "verify", "-attime", AT, "-CAfile", pki["ca.pem"], pki["leaf.pem"])
    assert plain.returncode == 0, plain.stdout + plain.stderr
    for name, revoked in (("crl-revoking", True), ("crl-empty", False)):
        text = _run(openssl, "crl", "-in", pki[f"{name}.pem"], "-noout", "-text",
                    "-CAfile", pki["ca.pem"])
        assert text.returncode == 0, text.stderr
        assert "verify OK" in text.stdout + text.stderr
        assert "Version 2 (0x1)" in text.stdout
        assert "X509v3 CRL Number: 3" in " ".join(text.stdout.split())
        assert ("Serial Number: 010001" in text.stdout) is revoked
        assert ("No Revoked Certificates." in text.stdout) is not revoked
        checked = _run(openssl, "verify", "-attime", AT, "-crl_check", "-CAfile", pki["ca.pem"],
                       "-CRLfile", pki[f"{name}.pem"], pki["leaf.pem"])
        assert (checked.returncode != 0) is revoked, checked.stdout + checked.stderr
        assert ("certificate revoked" in checked.stdout + checked.stderr) is revoked
