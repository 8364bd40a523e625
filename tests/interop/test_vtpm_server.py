"""Real tools driving the cvm vTPM over the TPM simulator protocol (``mssim`` TCTI).

tpm2-tools and systemd-cryptenroll talk to :class:`cvm.vtpm.mssim_server.MssimServer` as they
would to a hardware TPM: sealing and unsealing under PCR policies, EK/AK creation and quotes,
salted sessions with AES-CFB parameter encryption (systemd), and the ``systemd-tpm2`` LUKS2
token in both directions — systemd enrolls with the vTPM and cvm unlocks; cvm enrolls and
tpm2-tools unseal the token's blob.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cvm.cli.main import execute
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import StatusError
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.luks_token import SystemdTpm2Token, enroll, tpm2_tokens, unlock
from cvm.guest.tpm.seal import SealPolicy
from cvm.vtpm.engine import Tpm
from cvm.vtpm.mssim_server import MssimServer
from cvm.vtpm.policy import PolicyDigest

pytestmark = pytest.mark.interop
PCR7_EVENT = hashlib.sha256(b"secure boot policy").hexdigest()


@pytest.fixture
def vtpm(require_tool: Callable[[str], str], tmp_path: Path, free_port_pair: Callable[[], int],
         tool_runner: Callable[[Path, str, float], Any]) -> Iterator[dict[str, Any]]:
    """A running vTPM server and a runner for real tools against it."""
    for tool in ("tpm2_createprimary", "tpm2_unseal", "cryptsetup"):
        require_tool(tool)
    port = free_port_pair()
    tpm = Tpm()
    server = MssimServer(tpm, port)
    server.start()
    tcti = f"mssim:host=127.0.0.1,port={port}"

    run = tool_runner(tmp_path, tcti, 120)

    try:
        yield {"run": run, "dir": tmp_path, "tpm": server, "tcti": tcti}
    finally:
        server.stop()


def _client(vtpm: dict[str, Any]) -> TpmClient:
    server: MssimServer = vtpm["tpm"]

    def execute(command: bytes) -> bytes:
        with server.lock:
            return server.tpm.execute(command)

    return TpmClient(execute)


def _luks_image(vtpm: dict[str, Any], name: str) -> Path:
    image = vtpm["dir"] / name
    with image.open("wb") as handle:
        handle.truncate(20 << 20)
    (vtpm["dir"] / "pass").write_text("owner passphrase")
    vtpm["run"]("cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2",
                "--pbkdf-force-iterations", "1000", str(image), str(vtpm["dir"] / "pass"))
    return image


def test_tpm2_tools_seal_and_unseal_on_the_vtpm(vtpm: dict[str, Any]) -> None:
    run, workdir = vtpm["run"], vtpm["dir"]
    run("tpm2_pcrextend", f"7:sha256={PCR7_EVENT}")
    pcr7 = hashlib.sha256(bytes(32) + bytes.fromhex(PCR7_EVENT)).digest()
    assert _client(vtpm).pcr_read(PcrSelectionList.of("sha256", [7]))[2] == [pcr7]
    run("tpm2_startauthsession", "-S", "trial.ctx")
    run("tpm2_policypcr", "-S", "trial.ctx", "-l", "sha256:7", "-L", "pcr.policy")
    run("tpm2_flushcontext", "trial.ctx")
    expected = PolicyDigest.start().pcr(PcrSelectionList.of("sha256", [7]), [pcr7])
    assert (workdir / "pcr.policy").read_bytes() == expected.value
    (workdir / "secret.bin").write_bytes(b"sealed by tpm2-tools")
    run("tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "ecc256:aes128cfb", "-c",
        "prim.ctx")
    run("tpm2_create", "-C", "prim.ctx", "-g", "sha256", "-L", "pcr.policy", "-i",
        "secret.bin", "-u", "seal.pub", "-r", "seal.priv", "-a", "fixedtpm|fixedparent|noda")
    run("tpm2_flushcontext", "-t")
    run("tpm2_load", "-C", "prim.ctx", "-u", "seal.pub", "-r", "seal.priv", "-c", "seal.ctx")
    run("tpm2_flushcontext", "-t")
    assert run("tpm2_unseal", "-c", "seal.ctx", "-p", "pcr:sha256:7").stdout.encode() == (
        b"sealed by tpm2-tools")
    run("tpm2_flushcontext", "-t")
    run("tpm2_pcrextend", f"7:sha256={PCR7_EVENT}")
    refused = run("tpm2_unseal", "-c", "seal.ctx", "-p", "pcr:sha256:7", check=False)
    assert refused.returncode and "0x99d" in refused.stderr.lower()


def test_tpm2_tools_ek_ak_quote_and_credential(vtpm: dict[str, Any]) -> None:
    run, workdir = vtpm["run"], vtpm["dir"]
    run("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
    run("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s",
        "ecdsa", "-u", "ak.pem", "-f", "pem", "-n", "ak.name")
    run("tpm2_flushcontext", "-t")
    run("tpm2_quote", "-c", "ak.ctx", "-l", "sha256:0,7", "-q", "0123456789abcdef", "-m",
        "quote.msg", "-s", "quote.sig", "-o", "quote.pcrs", "-g", "sha256")
    run("tpm2_flushcontext", "-t")
    run("tpm2_checkquote", "-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig", "-f",
        "quote.pcrs", "-g", "sha256", "-q", "0123456789abcdef")
    (workdir / "credential.bin").write_bytes(b"AK is resident")
    run("tpm2_makecredential", "-T", "none", "-u", "ek.pub", "-s", "credential.bin", "-n",
        (workdir / "ak.name").read_bytes().hex(), "-o", "cred.out")
    run("tpm2_startauthsession", "--policy-session", "-S", "ek.session")
    run("tpm2_policysecret", "-S", "ek.session", "-c", "e")
    run("tpm2_activatecredential", "-c", "ak.ctx", "-C", "ek.ctx", "-i", "cred.out", "-o",
        "activated.bin", "-P", "session:ek.session")
    run("tpm2_flushcontext", "ek.session", check=False)
    assert (workdir / "activated.bin").read_bytes() == b"AK is resident"


def test_systemd_enrolls_with_the_vtpm_and_cvm_unlocks(vtpm: dict[str, Any],
                                                       require_tool: Callable[[str], str]
                                                       ) -> None:
    require_tool("systemd-cryptenroll")
    run = vtpm["run"]
    run("tpm2_pcrextend", f"7:sha256={PCR7_EVENT}")
    image = _luks_image(vtpm, "systemd.img")
    run("systemd-cryptenroll", f"--tpm2-device={vtpm['tcti']}", "--tpm2-pcrs=7", str(image),
        extra_env={"PASSWORD": "owner passphrase"})
    with FileStorage(image, read_only=True) as storage:
        volume = Luks2Volume.open(storage)
        token = tpm2_tokens(volume)[0]
        volume_key = unlock(volume, token, _client(vtpm))
        assert volume_key == volume.unlock(b"owner passphrase")
    run("tpm2_pcrextend", f"7:sha256={PCR7_EVENT}")
    with FileStorage(image, read_only=True) as storage, pytest.raises(StatusError) as refused:
        unlock(Luks2Volume.open(storage), token, _client(vtpm))
    assert refused.value.code == 0x99D


def _token_keyslot_shape(image: Path) -> dict[str, Any]:
    """The token's keyslot and token fields that do not vary with the randomness: what an
    enrolling tool chooses, the keyslot area's place included."""
    with FileStorage(image, read_only=True) as storage:
        volume = Luks2Volume.open(storage)
        token = next(t for t in volume.tokens.values() if t["type"] == "systemd-tpm2")
        slot = volume.metadata.keyslots[int(token["keyslots"][0])].to_json()
    del slot["kdf"]["salt"]
    fields = ("tpm2-pcrs", "tpm2-pcr-bank", "tpm2-primary-alg", "tpm2-pin", "tpm2-policy-hash",
              "keyslots")
    return {"keyslot": slot, "token": {name: token.get(name) for name in fields}}


def test_cvm_enrolls_the_keyslot_and_token_systemd_enrolls(vtpm: dict[str, Any],
                                                          require_tool: Callable[[str], str]
                                                          ) -> None:
    """The same volume enrolled by systemd-cryptenroll and by cvm: the same KDF (PBKDF2-SHA512,
    1,000 iterations), AF splitter, area cipher and size, and token fields."""
    require_tool("systemd-cryptenroll")
    run = vtpm["run"]
    theirs = _luks_image(vtpm, "systemd.img")
    run("systemd-cryptenroll", f"--tpm2-device={vtpm['tcti']}", "--tpm2-pcrs=7", str(theirs),
        extra_env={"PASSWORD": "owner passphrase"})
    ours = _luks_image(vtpm, "ours.img")
    client = _client(vtpm)
    selection = PcrSelectionList.of("sha256", [7])
    with FileStorage(ours) as storage:
        volume = Luks2Volume.open(storage)
        enroll(volume, volume.unlock(b"owner passphrase"), client, SealPolicy(selection),
               client.pcr_read(selection)[2], os.urandom(32))
    expected = _token_keyslot_shape(theirs)
    assert expected["keyslot"]["kdf"] == {"type": "pbkdf2", "hash": "sha512", "iterations": 1000}
    assert _token_keyslot_shape(ours) == expected


def test_tpm2_tools_unseal_a_token_cvm_enrolled(vtpm: dict[str, Any]) -> None:
    run, workdir = vtpm["run"], vtpm["dir"]
    run("tpm2_pcrextend", f"7:sha256={PCR7_EVENT}")
    image = _luks_image(vtpm, "ours.img")
    client = _client(vtpm)
    selection = PcrSelectionList.of("sha256", [7])
    values = client.pcr_read(selection)[2]
    with FileStorage(image) as storage:
        volume = Luks2Volume.open(storage)
        enroll(volume, volume.unlock(b"owner passphrase"), client, SealPolicy(selection), values,
               os.urandom(32))
    exported = json.loads(run("cryptsetup", "token", "export", "--token-id", "0",
                              str(image)).stdout)
    blob = SystemdTpm2Token.from_json(exported).blob
    (workdir / "tok.priv").write_bytes(blob.private.to_tpm2b())
    (workdir / "tok.pub").write_bytes(blob.public.to_tpm2b())
    run("tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "ecc256:aes128cfb", "-c",
        "srk.ctx")
    run("tpm2_load", "-C", "srk.ctx", "-u", "tok.pub", "-r", "tok.priv", "-c", "tok.ctx")
    run("tpm2_flushcontext", "-t")
    unsealed = run("tpm2_unseal", "-c", "tok.ctx", "-p", "pcr:sha256:7", "-o", "secret.bin")
    assert unsealed.returncode == 0
    passphrase = base64.b64encode((workdir / "secret.bin").read_bytes()).decode()
    run("cryptsetup", "open", "--test-passphrase", "--key-file", "-", str(image),
        stdin=passphrase)


@pytest.mark.slow
def test_cmd_tcti_keeps_the_tpm_running_between_invocations(
    require_tool: Callable[[str], str], tmp_path: Path
) -> None:
    require_tool("tpm2_pcrread")
    cvm = Path(sys.executable).parent / "cvm"
    if not cvm.exists():
        pytest.skip("the cvm console script is not installed in this environment")
    state = tmp_path / "vtpm.state"
    assert execute(["tpm", "manufacture", str(state)]) == 0
    env = {**os.environ, "TPM2TOOLS_TCTI": f"cmd:{cvm} tpm serve --state {state}"}

    def tool(*argv: str) -> str:
        return subprocess.run(list(argv), env=env, capture_output=True, text=True, check=True,
                              timeout=120).stdout

    tool("tpm2_pcrextend", f"16:sha256={PCR7_EVENT}")
    tool("tpm2_pcrextend", f"16:sha256={PCR7_EVENT}")
    once = hashlib.sha256(bytes(32) + bytes.fromhex(PCR7_EVENT)).digest()
    twice = hashlib.sha256(once + bytes.fromhex(PCR7_EVENT)).hexdigest()
    assert twice.upper() in tool("tpm2_pcrread", "sha256:16")


def _systemd_pin_token(vtpm: dict[str, Any]) -> Path:
    """A volume systemd-cryptenroll enrolled with PCR 7 and the PIN 4711."""
    image = _luks_image(vtpm, "pin.img")
    vtpm["run"]("systemd-cryptenroll", f"--tpm2-device={vtpm['tcti']}", "--tpm2-pcrs=7",
                "--tpm2-with-pin=yes", str(image),
                extra_env={"PASSWORD": "owner passphrase", "NEWPIN": "4711"})
    return image


def test_systemd_pin_token_needs_the_pin(vtpm: dict[str, Any],
                                         require_tool: Callable[[str], str]) -> None:
    require_tool("systemd-cryptenroll")
    image = _systemd_pin_token(vtpm)
    with FileStorage(image, read_only=True) as storage:
        volume = Luks2Volume.open(storage)
        token = tpm2_tokens(volume)[0]
        assert token.pin
        assert unlock(volume, token, _client(vtpm), b"4711") == volume.unlock(
            b"owner passphrase")
        with pytest.raises(StatusError) as refused:
            unlock(volume, token, _client(vtpm), b"0000")
        assert refused.value.code == 0x98E


def test_cvm_enrolls_the_pin_token_systemd_enrolls(vtpm: dict[str, Any],
                                                   require_tool: Callable[[str], str]) -> None:
    """With a PIN: the same keyslot, token fields and policy (PolicyPCR then PolicyAuthValue)."""
    require_tool("systemd-cryptenroll")
    theirs = _systemd_pin_token(vtpm)
    ours = _luks_image(vtpm, "ours.img")
    client = _client(vtpm)
    selection = PcrSelectionList.of("sha256", [7])
    with FileStorage(ours) as storage:
        volume = Luks2Volume.open(storage)
        enroll(volume, volume.unlock(b"owner passphrase"), client, SealPolicy(selection, True),
               client.pcr_read(selection)[2], os.urandom(32), pin=b"4711")
    expected = _token_keyslot_shape(theirs)
    assert expected["token"]["tpm2-pin"] is True
    assert _token_keyslot_shape(ours) == expected


def test_tpm2_tools_hash_and_sign_with_the_restricted_attestation_key(
        vtpm: dict[str, Any]) -> None:
    """tpm2_hash gets a hash-check ticket; tpm2_sign with the restricted AK signs a message the
    vTPM hashed (openssl verifies the signature), and not one that could pass for a quote."""
    run, workdir = vtpm["run"], vtpm["dir"]
    message = b"signed by the attestation key, hashed by the TPM"
    (workdir / "msg").write_bytes(message)
    run("tpm2_hash", "-C", "e", "-g", "sha256", "-o", "msg.digest", "-t", "msg.ticket", "msg")
    assert (workdir / "msg.digest").read_bytes() == hashlib.sha256(message).digest()
    run("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
    run("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s",
        "ecdsa", "-u", "ak.pem", "-f", "pem")
    run("tpm2_flushcontext", "-t")
    run("tpm2_sign", "-c", "ak.ctx", "-g", "sha256", "-f", "plain", "-o", "msg.sig", "msg")
    run("openssl", "dgst", "-sha256", "-verify", "ak.pem", "-signature", "msg.sig", "msg")
    (workdir / "forged").write_bytes(b"\xffTCG\x80\x18 a quote the vTPM never made")
    refused = run("tpm2_sign", "-c", "ak.ctx", "-g", "sha256", "-o", "forged.sig", "forged",
                  check=False)
    assert refused.returncode and "0x3e0" in refused.stderr.lower()  # TPM_RC_TICKET, param 3
