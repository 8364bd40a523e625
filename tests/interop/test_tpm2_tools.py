"""The vTPM against the real swtpm + tpm2-tools (TCTI ``swtpm:`` on 127.0.0.1).

* trial-session policy digests of tpm2_policypcr / policyauthvalue / policypassword /
  policyauthorize / policyor equal :class:`cvm.vtpm.policy.PolicyDigest`;
* a quote made by the vTPM verifies with tpm2_checkquote (and fails with another nonce or
  other PCR values);
* a TPM2B_PUBLIC made by the vTPM loads with tpm2_loadexternal and gets the same Name;
* tpm2_makecredential's KDFa / AES-CFB / HMAC output unwraps with cvm's primitives;
* a ``systemd-tpm2`` token systemd-cryptenroll makes against swtpm parses with cvm's code and
  its policy hash is cvm's PolicyPCR digest; a token cvm writes is exported by cryptsetup and
  its base64 secret opens the keyslot with ``cryptsetup open --test-passphrase``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from cvm.cli.main import execute
from cvm.crypto.tpm_credential import make_credential, make_credential_ecc
from cvm.crypto.tpm_kdf import aes_cfb_decrypt, hmac, kdfa
from cvm.crypto.tpm_keys import public_key_pem
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.formats.tpm2.constants import TpmRh, TpmSe
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import EccPoint, Public, RsaParms
from cvm.formats.tpm2.tpm2b import parse_tpm2b, reader
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.guest.tpm.luks_token import SystemdTpm2Token, tpm2_tokens
from cvm.guest.tpm.seal import unseal
from cvm.vtpm.engine import Tpm
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.state import PersistentState
from cvm.vtpm.templates import ak_template, ek_template, public_from_pem, srk_template

pytestmark = pytest.mark.interop
Run = Callable[..., subprocess.CompletedProcess[str]]


def _trial(run: Run, *policy_commands: list[str]) -> bytes:
    run("tpm2_startauthsession", "-S", "trial.ctx")
    try:
        for argv in policy_commands:
            run(*argv, "-S", "trial.ctx", "-L", "out.policy")
    finally:
        run("tpm2_flushcontext", "trial.ctx")
    return Path(run("pwd").stdout.strip(), "out.policy").read_bytes()


def test_policy_pcr_authvalue_password(tools: tuple[Run, Path]) -> None:
    run, workdir = tools
    pcr7 = hashlib.sha256(bytes(32) + hashlib.sha256(b"abc").digest()).digest()
    pcr0 = hashlib.sha256(b"firmware").digest()
    (workdir / "values.bin").write_bytes(pcr0 + pcr7)
    selection = PcrSelectionList.of("sha256", [0, 7])
    ours = PolicyDigest.start().pcr(selection, [pcr0, pcr7])
    theirs = _trial(run, ["tpm2_policypcr", "-l", "sha256:0,7", "-f", "values.bin"])
    assert theirs == ours.value
    theirs = _trial(run, ["tpm2_policypcr", "-l", "sha256:0,7", "-f", "values.bin"],
                    ["tpm2_policyauthvalue"])
    assert theirs == ours.auth_value().value
    (workdir / "sha1.bin").write_bytes(hashlib.sha1(b"x").digest())
    theirs = _trial(run, ["tpm2_policypcr", "-l", "sha1:7", "-f", "sha1.bin"],
                    ["tpm2_policypassword"])
    sha1_selection = PcrSelectionList.of("sha1", [7])
    expected = PolicyDigest.start().pcr(sha1_selection, [hashlib.sha1(b"x").digest()]).password()
    assert theirs == expected.value


def test_policy_authorize_and_or(tools: tuple[Run, Path]) -> None:
    run, workdir = tools
    for kind, key in (("rsa", rsa.generate_private_key(65537, 2048)),
                      ("ecc", ec.generate_private_key(ec.SECP256R1()))):
        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        (workdir / "key.pem").write_bytes(pem)
        run("tpm2_loadexternal", "-C", "o", "-G", kind, "-u", "key.pem", "-c", "key.ctx",
            "-n", "key.name")
        run("tpm2_flushcontext", "-t")
        name = (workdir / "key.name").read_bytes()
        assert name == public_from_pem(pem).name()
        theirs = _trial(run, ["tpm2_policyauthorize", "-n", "key.name", "-q", "706f6c"])
        assert theirs == PolicyDigest.start().authorize(name, b"pol").value
    branches = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    for index, branch in enumerate(branches):
        (workdir / f"b{index}.policy").write_bytes(branch)
    theirs = _trial(run, ["tpm2_policyor", "-l", "sha256:b0.policy,b1.policy,b2.policy"])
    assert theirs == PolicyDigest.start().or_(branches).value


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_checkquote_accepts_our_quote(tools: tuple[Run, Path], kind: str) -> None:
    run, workdir = tools
    tpm = Tpm()
    client = TpmClient(tpm.execute)
    client.startup()
    client.pcr_extend(7, {0x000B: hashlib.sha256(b"shim").digest()})
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, ak_template(kind))
    ak = client.load(srk, blob, public)
    selection = PcrSelectionList.parse_text("sha256:0,7")
    message, signature = client.quote(ak, bytes.fromhex("0123456789abcdef"), selection)
    values = client.pcr_read(selection)[2]
    if isinstance(public.unique, EccPoint):
        pem = public_key_pem("ecc", public.unique.x, public.unique.y)
    else:
        assert isinstance(public.parameters, RsaParms)
        pem = public_key_pem("rsa", public.unique, public.parameters.exponent)
    (workdir / "ak.pem").write_bytes(pem)
    (workdir / "quote.msg").write_bytes(message)
    (workdir / "quote.sig").write_bytes(signature.to_bytes())
    (workdir / "pcrs.bin").write_bytes(b"".join(values))
    (workdir / "bad.bin").write_bytes(b"".join(values)[:-1] + b"\x00")
    base = ["tpm2_checkquote", "-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig",
            "-l", "sha256:0,7", "-g", "sha256"]
    run(*base, "-f", "pcrs.bin", "-q", "0123456789abcdef")
    assert run(*base, "-f", "pcrs.bin", "-q", "0123456789abcdee", check=False).returncode
    assert run(*base, "-f", "bad.bin", "-q", "0123456789abcdef", check=False).returncode


def test_loadexternal_name_matches(tools: tuple[Run, Path]) -> None:
    run, workdir = tools
    tpm = Tpm()
    client = TpmClient(tpm.execute)
    client.startup()
    srk, srk_public = client.create_primary(TpmRh.OWNER, srk_template())
    _, ak_public = client.create(srk, ak_template("rsa"))
    publics: list[Public] = [ak_public, srk_public]
    for public in publics:
        (workdir / "pub.bin").write_bytes(public.to_tpm2b())
        run("tpm2_loadexternal", "-C", "o", "-u", "pub.bin", "-c", "ext.ctx", "-n", "ext.name")
        run("tpm2_flushcontext", "-t")
        assert (workdir / "ext.name").read_bytes() == public.name()


def _activate_tools_credential(tools: tuple[Run, Path], client: TpmClient,
                               ek: tuple[int, str], ak: tuple[int, Public]) -> bytes:
    """tpm2_makecredential of ``secret.bin`` for the AK's Name under the EK public in the
    named file (``ek`` = (handle, file)); the vTPM activates the credential with both keys."""
    run, workdir = tools
    (ek_handle, ek_file), (ak_handle, ak_public) = ek, ak
    run("tpm2_makecredential", "-T", "none", "-u", ek_file, "-s", "secret.bin",
        "-n", ak_public.name().hex(), "-o", "tools.cred")
    blob = reader((workdir / "tools.cred").read_bytes()[8:], "credential")
    id_object = blob.take(blob.u16())
    secret = blob.take(blob.u16())
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_secret(session, TpmRh.ENDORSEMENT)
    return client.activate_credential(ak_handle, ek_handle, id_object, secret,
                                      key_auth=Auth(b"", session))


def test_makecredential_unwraps_with_our_kdf(tools: tuple[Run, Path]) -> None:
    run, workdir = tools
    tpm = Tpm()
    client = TpmClient(tpm.execute)
    client.startup()
    handle, ek = client.create_primary(TpmRh.ENDORSEMENT, ek_template("rsa"))
    item = tpm.objects[handle]
    assert item.sensitive is not None and isinstance(ek.unique, bytes)
    (workdir / "ek.pub").write_bytes(ek.to_tpm2b())
    (workdir / "secret.bin").write_bytes(b"credential value")
    name = hashlib.sha256(b"some AK").digest()
    (workdir / "ak.name").write_bytes(b"\x00\x0b" + name)
    run("tpm2_makecredential", "-T", "none", "-u", "ek.pub", "-s", "secret.bin",
        "-n", (b"\x00\x0b" + name).hex(), "-o", "cred.out")
    blob = reader((workdir / "cred.out").read_bytes(), "credential")
    assert blob.u32() == 0xBADCC0DE and blob.u32() == 1
    id_object = reader(blob.take(blob.u16()), "TPM2B_ID_OBJECT")
    integrity = id_object.take(id_object.u16())
    enc_identity = id_object.rest()
    secret = blob.take(blob.u16())
    p = int.from_bytes(item.sensitive.sensitive, "big")
    n = int.from_bytes(ek.unique, "big")
    q = n // p
    d = pow(65537, -1, (p - 1) * (q - 1))
    key = rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                rsa.rsa_crt_iqmp(p, q),
                                rsa.RSAPublicNumbers(65537, n)).private_key()
    seed = key.decrypt(secret, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(),
                                            b"IDENTITY\x00"))
    ak_name = b"\x00\x0b" + name
    hmac_key = kdfa("sha256", seed, b"INTEGRITY", b"", b"", bits=256)
    assert hmac("sha256", hmac_key, enc_identity, ak_name) == integrity
    sym_key = kdfa("sha256", seed, b"STORAGE", ak_name, b"", bits=128)
    plain = aes_cfb_decrypt(sym_key, bytes(16), enc_identity)
    assert parse_tpm2b(plain, "TPM2B_DIGEST") == b"credential value"
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob_private, ak_public = client.create(srk, ak_template("rsa"))
    ak = client.load(srk, blob_private, ak_public)
    assert _activate_tools_credential(tools, client, (handle, "ek.pub"),
                                      (ak, ak_public)) == b"credential value"


def test_makecredential_for_our_ecc_ek(tools: tuple[Run, Path]) -> None:
    workdir = tools[1]
    tpm = Tpm()
    client = TpmClient(tpm.execute)
    client.startup()
    ek, ek_public = client.create_primary(TpmRh.ENDORSEMENT, ek_template("ecc"))
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    private, ak_public = client.create(srk, ak_template("ecc"))
    ak = client.load(srk, private, ak_public)
    (workdir / "ekecc.pub").write_bytes(ek_public.to_tpm2b())
    (workdir / "secret.bin").write_bytes(b"ecc credential")
    assert _activate_tools_credential(tools, client, (ek, "ekecc.pub"),
                                      (ak, ak_public)) == b"ecc credential"


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_swtpm_activates_our_credential(tools: tuple[Run, Path], kind: str) -> None:
    run, workdir = tools
    run("tpm2_createek", "-c", "ek.ctx", "-G", kind, "-u", "ek.pub")
    run("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s",
        "rsassa", "-u", "ak.pub", "-n", "ak.name")
    run("tpm2_flushcontext", "-t")
    ek = Public.from_tpm2b((workdir / "ek.pub").read_bytes())
    name = (workdir / "ak.name").read_bytes()
    if isinstance(ek.unique, EccPoint):
        blob, secret = make_credential_ecc("p256", (ek.unique.x, ek.unique.y), "sha256", 128,
                                           name, b"our credential", os.urandom)
    else:
        assert isinstance(ek.parameters, RsaParms)
        blob, secret = make_credential(ek.unique, ek.parameters.exponent, "sha256", 128, name,
                                       b"our credential", os.urandom)
    (workdir / "ours.cred").write_bytes(bytes.fromhex("badcc0de00000001") + len(blob).to_bytes(
        2, "big") + blob + len(secret).to_bytes(2, "big") + secret)
    run("tpm2_startauthsession", "--policy-session", "-S", "ek.session")
    try:
        run("tpm2_policysecret", "-S", "ek.session", "-c", "e")
        run("tpm2_activatecredential", "-c", "ak.ctx", "-C", "ek.ctx", "-i", "ours.cred",
            "-o", "activated.bin", "-P", "session:ek.session")
    finally:
        run("tpm2_flushcontext", "ek.session", check=False)
        run("tpm2_flushcontext", "-t", check=False)
    assert (workdir / "activated.bin").read_bytes() == b"our credential"


def _luks_image(run: Run, workdir: Path, name: str) -> Path:
    image = workdir / name
    with image.open("wb") as handle:
        handle.truncate(20 << 20)
    (workdir / "pass").write_text("owner passphrase")
    run("cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2",
        "--pbkdf-force-iterations", "1000", str(image), str(workdir / "pass"))
    return image


def test_systemd_cryptenroll_token_parses(tools: tuple[Run, Path],
                                          require_tool: Callable[[str], str]) -> None:
    run, workdir = tools
    require_tool("systemd-cryptenroll")
    require_tool("cryptsetup")
    image = _luks_image(run, workdir, "systemd.img")
    run("tpm2_pcrextend", "7:sha256=" + hashlib.sha256(b"abc").hexdigest())
    run("tpm2_pcrread", "sha256:7", "-o", "pcr7.bin")
    device = f"--tpm2-device=swtpm:host=127.0.0.1,port={run.port}"  # type: ignore[attr-defined]
    run("systemd-cryptenroll", device, "--tpm2-pcrs=7", str(image),
        extra_env={"PASSWORD": "owner passphrase"})
    exported = json.loads(run("cryptsetup", "token", "export", "--token-id", "0",
                              str(image)).stdout)
    token = SystemdTpm2Token.from_json(exported)
    assert token.to_json() == exported
    pcr7 = (workdir / "pcr7.bin").read_bytes()
    expected = PolicyDigest.start().pcr(PcrSelectionList.of("sha256", [7]), [pcr7])
    assert token.policy_hash == expected.value == token.blob.public.auth_policy
    assert token.blob.public.attributes == 0x12 and token.keyslots == (1,)
    with FileStorage(image, read_only=True) as storage:
        assert tpm2_tokens(Luks2Volume.open(storage))[0] == token


def test_cryptsetup_reads_our_token(tools: tuple[Run, Path],
                                    require_tool: Callable[[str], str]) -> None:
    run, workdir = tools
    require_tool("cryptsetup")
    image = _luks_image(run, workdir, "ours.img")
    state = workdir / "vtpm.state"
    tpm = Tpm()
    state.write_bytes(tpm.state.to_bytes())
    (workdir / "pcr7.bin").write_bytes(bytes(32))
    assert execute(["luks", "enroll-tpm2", str(image), "--key-file", str(workdir / "pass"),
                    "--tpm-state", str(state), "--pcrs", "7", "--pcr-values",
                    str(workdir / "pcr7.bin")]) == 0
    exported = json.loads(run("cryptsetup", "token", "export", "--token-id", "0",
                              str(image)).stdout)
    assert exported["type"] == "systemd-tpm2" and exported["keyslots"] == ["1"]
    assert {"tpm2-blob", "tpm2-pcrs", "tpm2-pcr-bank", "tpm2-primary-alg", "tpm2-policy-hash",
            "tpm2-pin"} <= set(exported)
    dump = run("cryptsetup", "luksDump", str(image)).stdout
    assert "systemd-tpm2" in dump and "sha512" in dump
    token = SystemdTpm2Token.from_json(exported)
    client = TpmClient(Tpm(PersistentState.from_bytes(state.read_bytes())).execute)
    client.startup()
    secret = unseal(client, token.blob, token.seal_policy())
    passphrase = base64.b64encode(secret).decode()
    run("cryptsetup", "open", "--test-passphrase", "--key-slot", "1", "--key-file", "-",
        str(image), stdin=passphrase)
    wrong = run("cryptsetup", "open", "--test-passphrase", "--key-file", "-", str(image),
                stdin="not it", check=False)
    assert wrong.returncode != 0
