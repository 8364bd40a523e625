"""``cvm varstore show`` / ``enroll``: Debian's Microsoft-keyed store and our own keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.crypto.x509_edk2 import generate_rsa_key, issue_certificate, pem
from cvm.formats.uefi.signature_list import SignatureDatabase
from cvm.formats.uefi.varstore import Varstore

MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")


def test_show_debian_ms_store(capsys: pytest.CaptureFixture[str]) -> None:
    if not MS_VARS.exists():
        pytest.skip("package ovmf is not installed")
    assert execute(["varstore", "show", str(MS_VARS), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    by_name = {v["name"]: v for v in document["variables"]}
    assert {"PK", "KEK", "db", "dbx"} <= set(by_name)
    subjects = [e.get("subject", "") for e in by_name["db"]["entries"]]
    assert any("Microsoft Corporation UEFI CA 2011" in s for s in subjects)
    assert by_name["dbx"]["entries"][0]["type"] == "EFI_CERT_SHA256"
    assert execute(["varstore", "show", str(MS_VARS)]) == 0
    assert "EFI_CERT_X509 owner 77fa9abd" in capsys.readouterr().out


def test_enroll_own_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = tmp_path / "owner.pem"
    cert.write_bytes(pem(issue_certificate("owner", generate_rsa_key())))
    out = tmp_path / "vars.fd"
    owner = "0e0f0a0b-1c1d-4e4f-8a8b-9c9d0e0f1a1b"
    assert execute(["varstore", "enroll", "--pk", str(cert), "--kek", str(cert), "--db",
                    str(cert), "--dbx-hash", "ab" * 32, "--owner", owner, "-o", str(out)]) == 0
    store = Varstore.parse(out.read_bytes())
    assert [v.name for v in store.variables][:4] == ["PK", "KEK", "db", "dbx"]
    db = store.get("db")
    assert db is not None
    assert str(SignatureDatabase.parse(db.data).certificates()[0].owner) == owner
    assert len(out.read_bytes()) == 0x84000
    capsys.readouterr()


def test_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"junk" * 100)
    assert execute(["varstore", "show", str(junk)]) == 65
    assert execute(["varstore", "enroll", "--pk", str(junk), "-o", str(tmp_path / "o")]) == 65
    cert = tmp_path / "c.pem"
    cert.write_bytes(pem(issue_certificate("x", generate_rsa_key())))
    assert execute(["varstore", "enroll", "--pk", str(cert), "--dbx-hash", "zz",
                    "-o", str(tmp_path / "o")]) == 65
    assert "Traceback" not in capsys.readouterr().err


def test_signed_updates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cvm.crypto.x509_edk2 import private_key_pem

    pk_key, other_key = generate_rsa_key(), generate_rsa_key()
    (tmp_path / "pk.pem").write_bytes(pem(issue_certificate("pk", pk_key)))
    (tmp_path / "pk.key").write_bytes(private_key_pem(pk_key))
    (tmp_path / "other.pem").write_bytes(pem(issue_certificate("other", other_key)))
    (tmp_path / "other.key").write_bytes(private_key_pem(other_key))
    store = tmp_path / "vars.fd"
    assert execute(["varstore", "enroll", "--pk", str(tmp_path / "pk.pem"), "--kek",
                    str(tmp_path / "pk.pem"), "-o", str(store)]) == 0
    good = tmp_path / "db.auth"
    assert execute(["varstore", "auth", "db", "--add", str(tmp_path / "other.pem"), "--key",
                    str(tmp_path / "pk.key"), "--cert", str(tmp_path / "pk.pem"), "--time",
                    "2026-02-03T04:05:06", "-o", str(good)]) == 0
    updated = tmp_path / "vars2.fd"
    assert execute(["varstore", "update", str(store), "db", str(good), "-o", str(updated)]) == 0
    db = Varstore.parse(updated.read_bytes()).get("db")
    assert db is not None and len(SignatureDatabase.parse(db.data)) == 1
    assert execute(["varstore", "update", str(updated), "db", str(good), "-o",
                    str(tmp_path / "x")]) == 67
    assert "newer timestamp" in capsys.readouterr().err
    forged = tmp_path / "forged.auth"
    assert execute(["varstore", "auth", "db", "--add", str(tmp_path / "other.pem"), "--key",
                    str(tmp_path / "other.key"), "--cert", str(tmp_path / "other.pem"),
                    "--time", "2027-01-01T00:00:00", "-o", str(forged)]) == 0
    assert execute(["varstore", "update", str(updated), "db", str(forged), "-o",
                    str(tmp_path / "x")]) == 66
    assert execute(["varstore", "auth", "db", "--key", str(tmp_path / "pk.key"), "--cert",
                    str(tmp_path / "pk.pem"), "--time", "yesterday", "-o",
                    str(tmp_path / "y")]) == 64
    capsys.readouterr()
