"""``cvm tpm``: policy digests from files and event logs, seal/unseal, inspect."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cvm.cli.main import execute
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.vtpm.mssim_server import MssimServer
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.state_file import USER_HEADER_SIZE, KeySource, StateFileHeader
from cvm.vtpm.state_store import Keyring, StateStore, default_keyring
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
    assert execute(["tpm", "policy", "pcr", "--bank", "md5", "--pcrs", "7", "--pcr-values",
                    str(short)]) == 64  # an unknown bank is a usage error, not bad data
    assert execute(["tpm", "inspect", str(short)]) == 65
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("cvm: error:") == 4


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


# ---- the sealed state file and the dictionary-attack lockout -------------------------------
class WallClock:
    """The wall clock the state store reads, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sealed(vectors: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A manufactured state with a secret sealed to a boot log and the PIN 4711."""
    clock = WallClock()
    monkeypatch.setattr("cvm.vtpm.state_store.CLOCK", clock)
    log = vectors / "tpm" / "go-tpm-tools" / "ubuntu-2404-amd-sevsnp.bin"
    paths = {name: tmp_path / name for name in ("state", "blob", "secret", "pin", "wrong")}
    paths["secret"].write_bytes(b"volume key material")
    paths["pin"].write_bytes(b"4711")
    paths["wrong"].write_bytes(b"0000")
    assert execute(["tpm", "manufacture", str(paths["state"])]) == 0
    assert execute(["tpm", "seal", "--state", str(paths["state"]), "--pcrs", "7",
                    "--from-eventlog", str(log), "--pin-file", str(paths["pin"]), "--in",
                    str(paths["secret"]), "-o", str(paths["blob"])]) == 0
    unseal = ["tpm", "unseal", str(paths["blob"]), "--state", str(paths["state"]), "--pcrs",
              "7", "--eventlog", str(log), "--pin-file"]
    return {"clock": clock, "unseal": unseal, **paths}


def test_state_file_is_sealed(sealed: dict[str, Any]) -> None:
    data = sealed["state"].read_bytes()
    assert data.startswith(b"CVMVTPMS") and b"CVMTPMNV" not in data
    header = StateFileHeader.parse(data)
    assert header.version == 2 and header.key_source == KeySource.KEYRING


def test_old_state_file_after_wrong_pins_is_refused(sealed: dict[str, Any],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    old = sealed["state"].read_bytes()
    capsys.readouterr()
    for attempt in range(6):
        assert execute([*sealed["unseal"], str(sealed["wrong"])]) == 68
        expected = "TPM_RC_AUTH_FAIL" if attempt < 3 else "TPM_RC_LOCKOUT"
        assert expected in capsys.readouterr().err
    assert execute([*sealed["unseal"], str(sealed["pin"])]) == 68
    assert "TPM_RC_LOCKOUT" in capsys.readouterr().err
    sealed["state"].write_bytes(old)
    assert execute([*sealed["unseal"], str(sealed["pin"])]) == 67
    assert "old copy (rollback)" in capsys.readouterr().err


def test_edited_max_tries_is_refused(sealed: dict[str, Any],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = sealed["state"].read_bytes()
    store, tpm, _ = StateStore.open(sealed["state"], Keyring(default_keyring()))
    plain = tpm.state.to_bytes()
    tpm.state.max_tries = 0xFFFFFFFF
    # AES-GCM is a stream cipher: the same flip in the ciphertext flips max_tries in the
    # plaintext, and only the tag can tell.
    delta = bytes(a ^ b for a, b in zip(plain, tpm.state.to_bytes(), strict=True))
    start = USER_HEADER_SIZE + 4
    edited = bytearray(data)
    for offset, flip in enumerate(delta):
        edited[start + offset] ^= flip
    sealed["state"].write_bytes(bytes(edited))
    capsys.readouterr()
    assert execute([*sealed["unseal"], str(sealed["pin"])]) == 66
    assert "does not authenticate" in capsys.readouterr().err
    header = bytearray(data)
    header[0x10] ^= 0x01
    sealed["state"].write_bytes(bytes(header))
    assert execute([*sealed["unseal"], str(sealed["pin"])]) == 66
    assert store.counter.read() == StateFileHeader.parse(data).counter


def test_lockout_recovers_after_the_recovery_time(sealed: dict[str, Any],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        assert execute([*sealed["unseal"], str(sealed["wrong"])]) == 68
    sealed["clock"].now += 999
    assert execute([*sealed["unseal"], str(sealed["pin"])]) == 68
    assert "TPM_RC_LOCKOUT" in capsys.readouterr().err
    sealed["clock"].now += 1
    out = sealed["secret"].parent / "out"
    out.write_bytes(b"an earlier, public file")
    out.chmod(0o644)
    assert execute([*sealed["unseal"], str(sealed["pin"]), "-o", str(out)]) == 0
    assert out.read_bytes() == b"volume key material"
    assert out.stat().st_mode & 0o777 == 0o600  # the unsealed secret is the owner's alone
    _, tpm, _ = StateStore.open(sealed["state"], Keyring(default_keyring()))
    assert tpm.state.failed_tries == 2 and not tpm.state.da_used
    sealed["clock"].now -= 10_000  # a wall clock set back does not move the TPM clock back
    _, again, _ = StateStore.open(sealed["state"], Keyring(default_keyring()))
    assert again.now_ms() >= tpm.now_ms()


def test_state_under_a_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, key, other = tmp_path / "state", tmp_path / "key", tmp_path / "other"
    key.write_text("11" * 32 + "\n")
    other.write_bytes(b"\x22" * 32)
    assert execute(["tpm", "manufacture", str(state), "--key-file", str(key)]) == 0
    assert StateFileHeader.parse(state.read_bytes()).key_source == KeySource.KEY_FILE
    assert "key" not in json.loads(default_keyring().read_text())["entries"].popitem()[1]
    serve = ["tpm", "serve", "--state", str(state)]
    capsys.readouterr()
    assert execute([*serve, "--key-file", str(other)]) == 66
    assert execute(serve) == 64
    key.write_bytes(b"short")
    assert execute([*serve, "--key-file", str(key)]) == 65
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("cvm: error:") == 3
    assert "sealed under key" in err and "give --key-file" in err
    assert "32 raw bytes or 64 hex digits" in err
    assert execute(["tpm", "manufacture", str(tmp_path / "x"), "--keyring",
                    str(tmp_path / "k.json")]) == 0
    assert execute(["tpm", "serve", "--state", str(tmp_path / "x")]) == 64
    legacy = tmp_path / "legacy"
    legacy.write_bytes(b"CVMTPMNV" + bytes(8))
    assert execute(["tpm", "serve", "--state", str(legacy)]) == 65
    assert "unprotected vTPM state" in capsys.readouterr().err


@pytest.mark.parametrize("failed", [False, True], ids=["saved-at-exit", "failure-mode"])
def test_serve_on_a_port_saves_at_exit_unless_the_state_could_not_be_saved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_port_pair: Any,
        failed: bool) -> None:
    state = tmp_path / "state"
    assert execute(["tpm", "manufacture", str(state)]) == 0
    before = state.read_bytes()

    def serve_then_stop(server: MssimServer) -> None:
        # a command that changes nothing persistent, then (maybe) failure mode, then Ctrl-C
        server.tpm.execute(bytes.fromhex("80010000000c0000017b0010"))  # GetRandom(16)
        if failed:
            server.failure = "the vTPM state could not be saved: disk full"
        server.stop()

    monkeypatch.setattr(MssimServer, "serve_forever", serve_then_stop)
    assert execute(["tpm", "serve", "--state", str(state), "--port",
                    str(free_port_pair())]) == 0
    assert (state.read_bytes() == before) is failed  # saved (clock, counter) only when sound


@pytest.mark.parametrize("taken", [0, 1], ids=["tpm-port", "platform-port"])
def test_serve_on_a_port_in_use_names_the_address_and_leaves_the_state(
        tmp_path: Path, free_port_pair: Any, capsys: pytest.CaptureFixture[str],
        taken: int) -> None:
    import socket

    state = tmp_path / "state"
    assert execute(["tpm", "manufacture", str(state)]) == 0
    before = state.read_bytes()
    port = free_port_pair()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port + taken))
        other.listen()
        capsys.readouterr()
        assert execute(["tpm", "serve", "--state", str(state), "--port", str(port)]) == 74
    assert capsys.readouterr().err == (f"cvm: error: cannot listen: Address already in use: "
                                       f"127.0.0.1:{port + taken}\n")
    assert state.read_bytes() == before
