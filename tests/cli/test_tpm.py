"""``cvm tpm``: policy digests from files and event logs, seal/unseal, inspect."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cvm.cli.main import execute
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.templates import public_from_pem

PCR7 = hashlib.sha256(bytes(32) + hashlib.sha256(b"abc").digest()).digest()


def test_policy_pcr_from_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = tmp_path / "pcr7.bin"
    values.write_bytes(PCR7)
    assert execute(["tpm", "policy", "pcr", "--pcrs", "7", "--pcr-values", str(values)]) == 0
    assert capsys.readouterr().out.strip() == (
        "853032bce513db75735153c94e53e29e7c40e9957eff8ba24390f8f0121118b5"
    )
    assert execute(["tpm", "policy", "pcr", "--pcrs", "7", "--pcr-values", str(values),
                    "--pin", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"] == "0256f5089dcbc972060c16161f6ad3d11386da850c571222673bb7683d6bcff5"
    assert out["pin"] is True


def test_policy_pcr_from_real_eventlog(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = vectors / "tpm" / "go-tpm-tools"
    expected = json.loads((folder / "expected_pcrs.json").read_text())["Ubuntu2404AmdSevSnp"]
    log = folder / expected["file"]
    assert execute(["tpm", "policy", "pcr", "--pcrs", "0,4,7", "--from-eventlog", str(log),
                    "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    values = [bytes.fromhex(expected["expected_pcrs"]["sha256"][p]) for p in ("0", "4", "7")]
    selection = PcrSelectionList.of("sha256", [0, 4, 7])
    assert out["policy"] == PolicyDigest.start().pcr(selection, values).hex()


def test_policy_authorize(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "k.pem").write_bytes(pem)
    assert execute(["tpm", "policy", "authorize", "--key", str(tmp_path / "k.pem")]) == 0
    name = public_from_pem(pem).name()
    assert capsys.readouterr().out.strip() == PolicyDigest.start().authorize(name).hex()


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short.bin"
    short.write_bytes(b"123")
    assert execute(["tpm", "policy", "pcr", "--pcrs", "7", "--pcr-values", str(short)]) == 65
    assert execute(["tpm", "policy", "pcr", "--pcrs", "x", "--pcr-values", str(short)]) == 64
    assert execute(["tpm", "inspect", str(short)]) == 65
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("cvm: error:") == 3


def test_seal_and_unseal_against_boot_logs(vectors: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = vectors / "tpm" / "go-tpm-tools"
    good, other = folder / "ubuntu-2404-amd-sevsnp.bin", folder / "cos-101-amd-sev.bin"
    state, blob, secret = tmp_path / "state", tmp_path / "blob", tmp_path / "secret"
    pin = tmp_path / "pin"
    pin.write_bytes(b"4711\n")
    secret.write_bytes(b"volume key material")
    assert execute(["tpm", "manufacture", str(state)]) == 0
    assert execute(["tpm", "manufacture", str(state)]) == 64
    assert execute(["tpm", "seal", "--state", str(state), "--pcrs", "0,7", "--from-eventlog",
                    str(good), "--pin-file", str(pin), "--in", str(secret), "-o",
                    str(blob)]) == 0
    out = tmp_path / "out"
    base = ["tpm", "unseal", str(blob), "--state", str(state), "--pcrs", "0,7"]
    assert execute([*base, "--eventlog", str(good), "--pin-file", str(pin), "-o",
                    str(out)]) == 0
    assert out.read_bytes() == b"volume key material"
    capsys.readouterr()
    assert execute([*base, "--eventlog", str(other), "--pin-file", str(pin)]) == 68
    assert "TPM_RC_POLICY_FAIL (session 1)" in capsys.readouterr().err
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"0000")
    assert execute([*base, "--eventlog", str(good), "--pin-file", str(wrong)]) == 68
    assert "TPM_RC_AUTH_FAIL (session 1)" in capsys.readouterr().err
    assert execute(["tpm", "inspect", str(blob), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["structure"] == "sealed blob"
    assert described["attributes"] == "0x00000012"
