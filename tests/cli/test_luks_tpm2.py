"""``cvm luks enroll-tpm2`` / ``unlock-tpm2``: a systemd-tpm2 token opened by a measured boot."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cvm.cli.main import execute
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.tpm.luks_token import SystemdTpm2Token
from cvm.vtpm.policy import PolicyDigest

FAST = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]


@pytest.fixture
def setup(tmp_path: Path, vectors: Path) -> dict[str, Path]:
    folder = vectors / "tpm" / "go-tpm-tools"
    paths = {"image": tmp_path / "vol.img", "pass": tmp_path / "pass", "state": tmp_path / "st",
             "good": folder / "ubuntu-2404-amd-sevsnp.bin", "bad": folder / "cos-85-amd-sev.bin",
             "dir": tmp_path}
    paths["pass"].write_bytes(b"owner passphrase")
    with paths["image"].open("wb") as f:
        f.truncate(17 << 20)
    assert execute(["luks", "format", str(paths["image"]), "--key-file", str(paths["pass"]),
                    *FAST]) == 0
    assert execute(["tpm", "manufacture", str(paths["state"])]) == 0
    return paths


def _export(image: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert execute(["luks", "token", "export", str(image), "--token-id", "0"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_enroll_and_unlock(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    image, state = str(setup["image"]), str(setup["state"])
    pin = setup["dir"] / "pin"
    pin.write_bytes(b"123456")
    assert execute(["luks", "enroll-tpm2", image, "--key-file", str(setup["pass"]),
                    "--tpm-state", state, "--pcrs", "0,7", "--from-eventlog",
                    str(setup["good"]), "--pin-file", str(pin)]) == 0
    token = _export(setup["image"], capsys)
    assert token["type"] == "systemd-tpm2" and token["tpm2-pcrs"] == [0, 7]
    assert token["tpm2-pin"] is True and token["tpm2-primary-alg"] == "ecc"
    parsed = SystemdTpm2Token.from_json(token)
    assert parsed.to_json() == token
    assert parsed.blob.public.auth_policy == parsed.policy_hash
    assert execute(["luks", "dump", image, "--json"]) == 0
    slot = json.loads(capsys.readouterr().out)["keyslots"]["1"]
    assert slot["kdf"] == {"type": "pbkdf2", "hash": "sha512", "iterations": 1000,
                           "salt": slot["kdf"]["salt"]}
    base = ["luks", "unlock-tpm2", image, "--tpm-state", state]
    key = setup["dir"] / "vk"
    assert execute([*base, "--eventlog", str(setup["good"]), "--pin-file", str(pin),
                    "-o", str(key)]) == 0
    assert execute(["luks", "dump-volume-key", image, "--key-file", str(setup["pass"]),
                    "-o", str(setup["dir"] / "vk2")]) == 0
    assert key.read_bytes() == (setup["dir"] / "vk2").read_bytes()
    assert key.stat().st_mode & 0o777 == 0o600  # the volume key is the owner's alone
    capsys.readouterr()
    assert execute([*base, "--eventlog", str(setup["bad"]), "--pin-file", str(pin)]) == 68
    assert "TPM_RC_POLICY_FAIL (session 1)" in capsys.readouterr().err
    assert execute([*base, "--eventlog", str(setup["good"])]) == 64
    capsys.readouterr()  # a literal-PCR token takes no signed policy: said before the vTPM boots
    assert execute([*base, "--eventlog", str(setup["good"]), "--pin-file", str(pin),
                    "--pcr-signature", str(setup["dir"] / "absent.json")]) == 64
    assert ("the token has no public key: --pcr-signature is not needed"
            in capsys.readouterr().err)


def test_signed_pcr_policy(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    signer = rsa.generate_private_key(65537, 2048)
    pem = signer.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    (setup["dir"] / "pub.pem").write_bytes(pem)
    image, state = str(setup["image"]), str(setup["state"])
    assert execute(["luks", "enroll-tpm2", image, "--key-file", str(setup["pass"]),
                    "--tpm-state", state, "--pcrs", "7", "--from-eventlog", str(setup["good"]),
                    "--public-key", str(setup["dir"] / "pub.pem")]) == 0
    token = _export(setup["image"], capsys)
    assert token["tpm2_pubkey_pcrs"] == [11]
    assert base64.b64decode(str(token["tpm2_pubkey"])) == pem
    pcr11 = bytes(32)  # the log does not touch PCR 11
    approved = PolicyDigest.start().pcr(PcrSelectionList.of("sha256", [11]), [pcr11]).value
    signature = signer.sign(approved, padding.PKCS1v15(), hashes.SHA256())
    pkcs1 = signer.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.PKCS1)
    document = {"sha256": [{"pcrs": [11], "pkfp": hashlib.sha256(pem).hexdigest(),
                            "pol": approved.hex(),
                            "sig": base64.b64encode(signature).decode()}]}
    (setup["dir"] / "sig.json").write_text(json.dumps(document))
    capsys.readouterr()  # an entry naming another key (here, by the PEM's hash) is not used
    assert execute(["luks", "unlock-tpm2", image, "--tpm-state", state, "--eventlog",
                    str(setup["good"]), "--pcr-signature", str(setup["dir"] / "sig.json")]) == 65
    assert ("no signed policy for the token's key and the live PCR 11 (sha256)"
            in capsys.readouterr().err)
    document["sha256"][0]["pkfp"] = hashlib.sha256(pkcs1).hexdigest()  # systemd's fingerprint
    document["sha256"][0]["pol"] = bytes(32).hex()  # the right key, not the live PCR 11
    (setup["dir"] / "sig.json").write_text(json.dumps(document))
    assert execute(["luks", "unlock-tpm2", image, "--tpm-state", state, "--eventlog",
                    str(setup["good"]), "--pcr-signature", str(setup["dir"] / "sig.json")]) == 65
    assert "the live PCR 11" in capsys.readouterr().err
    (setup["dir"] / "sig.json").write_text('{"sha256": [{"pcrs": [11]}]}')
    assert execute(["luks", "unlock-tpm2", image, "--tpm-state", state, "--eventlog",
                    str(setup["good"]), "--pcr-signature", str(setup["dir"] / "sig.json")]) == 65
    assert "sig.json: .pcrsig: sha256[0] must hold exactly" in capsys.readouterr().err
    document["sha256"][0]["pol"] = approved.hex()
    (setup["dir"] / "sig.json").write_text(json.dumps(document))
    assert execute(["luks", "unlock-tpm2", image, "--tpm-state", state, "--eventlog",
                    str(setup["good"]), "--pcr-signature", str(setup["dir"] / "sig.json")]) == 0
    document["sha256"][0]["sig"] = base64.b64encode(bytes(256)).decode()
    (setup["dir"] / "sig.json").write_text(json.dumps(document))
    capsys.readouterr()
    assert execute(["luks", "unlock-tpm2", image, "--tpm-state", state, "--eventlog",
                    str(setup["good"]), "--pcr-signature", str(setup["dir"] / "sig.json")]) == 68
    assert "TPM_RC_SIGNATURE" in capsys.readouterr().err


def test_the_signers_pcrs_without_its_key_are_refused_not_ignored(
        setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Without --public-key there is no signed policy: PCR 7 would not be sealed to at all."""
    image = str(setup["image"])
    assert execute(["luks", "enroll-tpm2", image, "--key-file", str(setup["pass"]),
                    "--tpm-state", str(setup["state"]), "--pcrs", "0", "--from-eventlog",
                    str(setup["good"]), "--public-key-pcrs", "7"]) == 64
    assert capsys.readouterr().err == (
        "cvm: error: --public-key-pcrs: not for an enrollment without --public-key\n")
    assert execute(["luks", "token", "export", image, "--token-id", "0"]) == 64


def test_a_state_under_its_own_key_and_keyring_values_from_a_file_and_a_prompted_pin(
        setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The vTPM's key file and keyring reach both verbs; the raw PCR values and the prompted
    PIN reach the enrollment; the second token is unlocked by its id."""
    folder, image = setup["dir"], str(setup["image"])
    state, key, ring = folder / "own-state", folder / "tpm.key", folder / "ring.json"
    key.write_bytes(b"\x33" * 32)
    assert execute(["tpm", "manufacture", str(state), "--key-file", str(key), "--keyring",
                    str(ring)]) == 0
    own = ["--tpm-state", str(state), "--tpm-key-file", str(key), "--keyring", str(ring)]
    capsys.readouterr()
    assert execute(["luks", "unlock-tpm2", image, *own, "--eventlog", str(setup["good"])]) == 64
    assert capsys.readouterr().err == f"cvm: error: {image} has no systemd-tpm2 token\n"
    assert execute(["luks", "enroll-tpm2", image, "--key-file", str(setup["pass"]), *own,
                    "--pcrs", "0,7", "--from-eventlog", str(setup["good"])]) == 0
    assert capsys.readouterr().out == "token 0: systemd-tpm2, PCRs sha256:0,7\n"
    token = _export(setup["image"], capsys)
    assert "tpm2_pubkey_pcrs" not in token and token["tpm2-pin"] is False
    values = folder / "values"
    values.write_bytes(bytes(32))  # PCR 23 as reset: not what the log leaves in PCR 0
    monkeypatch.setattr("typer.prompt", lambda text, hide_input: "2468")
    assert execute(["luks", "enroll-tpm2", image, "--key-file", str(setup["pass"]), *own,
                    "--pcrs", "23", "--pcr-values", str(values), "--pin"]) == 0
    capsys.readouterr()
    pin = folder / "pin"
    pin.write_bytes(b"2468")
    base = ["luks", "unlock-tpm2", image, *own, "--eventlog", str(setup["good"])]
    assert execute([*base, "--token-id", "1", "--pin-file", str(pin)]) == 0
    assert capsys.readouterr().out == "token 1: unsealed; volume key 512 bits\n"
    assert execute([*base, "--token-id", "5"]) == 64
    assert capsys.readouterr().err == f"cvm: error: {image} has no systemd-tpm2 token 5\n"
    assert execute([*base, "--token-id", "1"]) == 64  # the token needs a PIN
    assert execute(["luks", "unlock-tpm2", image, "--tpm-state", str(state), "--eventlog",
                    str(setup["good"]), "--pin-file", str(pin), "--token-id", "1"]) == 64


def test_the_signers_pcrs_given_are_the_tokens(setup: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    signer = rsa.generate_private_key(65537, 2048)
    (setup["dir"] / "pub.pem").write_bytes(signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert execute(["luks", "enroll-tpm2", str(setup["image"]), "--key-file",
                    str(setup["pass"]), "--tpm-state", str(setup["state"]), "--pcrs", "7",
                    "--from-eventlog", str(setup["good"]), "--public-key",
                    str(setup["dir"] / "pub.pem"), "--public-key-pcrs", "11,12"]) == 0
    assert _export(setup["image"], capsys)["tpm2_pubkey_pcrs"] == [11, 12]


def test_a_public_key_that_does_not_parse_is_named_with_its_option_and_nothing_enrolled(
        setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The one line says which input is wrong: ``--public-key`` and the file, then why."""
    key = setup["dir"] / "pub.pem"
    key.write_bytes(b"not a key\n")
    image = str(setup["image"])
    capsys.readouterr()
    assert execute(["luks", "enroll-tpm2", image, "--key-file", str(setup["pass"]),
                    "--tpm-state", str(setup["state"]), "--pcrs", "7", "--from-eventlog",
                    str(setup["good"]), "--public-key", str(key)]) == 65
    assert capsys.readouterr().err == f"cvm: error: --public-key {key}: not a PEM public key\n"
    assert execute(["luks", "token", "export", image, "--token-id", "0"]) == 64
