"""A UKI's signed PCR 11 policy with systemd's own tools, against the cvm vTPM (``mssim`` TCTI).

``systemd-measure sign`` signs the PCR 11 policy of the same UKI sections with the same key as
cvm's image builder: the same policy digest and, RSASSA-PKCS1-v1_5 being deterministic, the same
signature bytes. ``systemd-cryptenroll --tpm2-public-key`` enrolls a token bound to that key;
cvm's enrolment of the same policy gives the same token fields, and cvm unlocks systemd's token
with systemd-measure's signature while PCR 11 holds the signed value, and not once it moves on.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.interop.test_vtpm_server import _client, _luks_image, vtpm  # noqa: F401

from cvm.crypto.x509_edk2 import load_private_key
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import StatusError
from cvm.formats.pcr_signature import PcrSignatureEntry, parse_pcr_signature
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.tpm2.constants import TpmAlg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.signature import Signature
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.uki import UKI_PCR, extend_phase
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.luks_token import SystemdTpm2Token, enroll, tpm2_tokens, unlock
from cvm.guest.tpm.pcr_bank import VtpmPcrBank
from cvm.guest.tpm.seal import SealPolicy, SignedPolicy
from cvm.image.boot_chain import pcr_signature
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.templates import public_from_pem

pytestmark = pytest.mark.interop
MEASURE = Path("/usr/lib/systemd/systemd-measure")
SECTIONS = {
    ".linux": b"\x4d\x5a a kernel of the signed-policy test" * 40,
    ".osrel": b'ID=cvm\nPRETTY_NAME="cvm signed policy"\n',
    ".cmdline": b"console=ttyS0 root=/dev/mapper/root ro",
    ".initrd": b"070701" + bytes(500),
}
SELECTION = PcrSelectionList.of("sha256", [UKI_PCR])


@pytest.fixture
def signed(vtpm: dict[str, Any], require_tool: Callable[[str], str]  # noqa: F811
           ) -> dict[str, Any]:
    """The UKI (with the key in ``.pcrpkey``, as cvm's images carry it), an RSA key pair made
    by openssl, and systemd-measure's signature for the ``enter-initrd`` phase."""
    if not MEASURE.exists():
        if os.environ.get("CI"):
            pytest.fail("systemd-measure (package systemd) is missing in CI")
        pytest.skip("systemd-measure is not installed")
    for tool in ("openssl", "systemd-cryptenroll"):
        require_tool(tool)
    run, workdir = vtpm["run"], vtpm["dir"]
    arguments = []
    for name, data in SECTIONS.items():
        (workdir / name.lstrip(".")).write_bytes(data)
        arguments.append(f"--{name.lstrip('.')}={name.lstrip('.')}")
    run("openssl", "genrsa", "-out", "key.pem", "2048")
    run("openssl", "rsa", "-in", "key.pem", "-pubout", "-out", "pub.pem")
    pub = (workdir / "pub.pem").read_bytes()
    document = run(str(MEASURE), "sign", *arguments, "--pcrpkey=pub.pem", "--bank=sha256",
                   "--phase=enter-initrd",
                   "--private-key=key.pem", "--public-key=pub.pem",
                   f"--tpm2-device={vtpm['tcti']}", "--json=short").stdout
    uki = build_pe([SectionSpec(".text", b"\xc3", CODE),
                    *(SectionSpec(name, data) for name, data in SECTIONS.items()),
                    SectionSpec(".pcrpkey", pub)])  # measured too, as the image's UKI has it
    return {"uki": uki, "pub": pub,
            "key": (workdir / "key.pem").read_bytes(),
            "entries": parse_pcr_signature(document.encode())}


def _measure_uki(vtpm: dict[str, Any], uki: bytes) -> None:  # noqa: F811
    """PCR 11 of the vTPM as systemd-stub and systemd-pcrphase leave it in the initrd."""
    bank = VtpmPcrBank(_client(vtpm))
    BootChain(EspFiles({"/EFI/BOOT/BOOTX64.EFI": uki}), Varstore.empty_4m()).run(bank)
    extend_phase(bank, "enter-initrd")


def _enroll_signed(image: Path, client: TpmClient, pub: bytes,
                   literal: tuple[int, ...] = ()) -> SystemdTpm2Token:
    """cvm enrolls a token bound to ``pub``'s signed PCR 11 and the ``literal`` PCRs' values."""
    selection = PcrSelectionList.of("sha256", literal)
    values = client.pcr_read(selection)[2] if literal else []
    with FileStorage(image) as storage:
        volume = Luks2Volume.open(storage)
        enroll(volume, volume.unlock(b"owner passphrase"), client,
               SealPolicy(selection, False, public_from_pem(pub)),
               values, os.urandom(32), pubkey_pem=pub, pubkey_pcrs=(UKI_PCR,))
        return tpm2_tokens(volume)[0]


def _signed_policy(pub: bytes, entry: PcrSignatureEntry) -> SignedPolicy:
    return SignedPolicy(public_from_pem(pub), SELECTION, entry.policy,
                        Signature(TpmAlg.RSASSA, TpmAlg.SHA256, sig=entry.signature))


def test_systemd_measure_signs_what_cvm_signs(signed: dict[str, Any]) -> None:
    (theirs,) = signed["entries"]
    ours = parse_pcr_signature(pcr_signature(signed["uki"], load_private_key(signed["key"]),
                                             signed["pub"]))
    assert (theirs.bank, theirs.pcrs) == ("sha256", (UKI_PCR,))
    assert theirs in ours  # the enter-initrd entry: policy, key fingerprint and signature


@pytest.mark.parametrize("literal", [(), (7,)], ids=["signed-only", "signed-and-pcr7"])
def test_systemd_enrolls_a_signed_policy_token_cvm_enrolls_and_unlocks(
        vtpm: dict[str, Any], signed: dict[str, Any],  # noqa: F811
        literal: tuple[int, ...]) -> None:
    """A token of the signed PCR 11 alone, and one that also binds PCR 7 literally (the image's
    ``--seal signed`` token): the same token from both tools, and cvm unlocks systemd's."""
    _measure_uki(vtpm, signed["uki"])
    run = vtpm["run"]
    theirs = _luks_image(vtpm, "systemd.img")
    run("systemd-cryptenroll", f"--tpm2-device={vtpm['tcti']}", "--tpm2-public-key=pub.pem",
        f"--tpm2-public-key-pcrs={UKI_PCR}", f"--tpm2-pcrs={'+'.join(map(str, literal))}",
        str(theirs), extra_env={"PASSWORD": "owner passphrase"})
    ours = _luks_image(vtpm, "ours.img")
    client = _client(vtpm)
    _enroll_signed(ours, client, signed["pub"], literal)

    def fields(image: Path) -> dict[str, Any]:
        with FileStorage(image, read_only=True) as storage:
            token = next(iter(Luks2Volume.open(storage).tokens.values()))
        shape = {name: token.get(name) for name in (
            "type", "keyslots", "tpm2-pcrs", "tpm2-pcr-bank", "tpm2-primary-alg",
            "tpm2-policy-hash", "tpm2-pin", "tpm2_pubkey_pcrs")}
        shape["tpm2_pubkey"] = base64.b64decode(token["tpm2_pubkey"])
        return shape

    expected = PolicyDigest.start().authorize(public_from_pem(signed["pub"]).name())
    if literal:
        selection = PcrSelectionList.of("sha256", literal)
        expected = expected.pcr(selection, client.pcr_read(selection)[2])
    assert fields(theirs)["tpm2-policy-hash"] == expected.value.hex()
    assert fields(ours) == fields(theirs)
    (entry,) = signed["entries"]
    with FileStorage(theirs, read_only=True) as storage:
        volume = Luks2Volume.open(storage)
        token: SystemdTpm2Token = tpm2_tokens(volume)[0]
        assert token.pubkey_pcrs == (UKI_PCR,) and token.pcrs == literal
        key = unlock(volume, token, client, signed=_signed_policy(signed["pub"], entry))
        assert key == volume.unlock(b"owner passphrase")
        extend_phase(VtpmPcrBank(client), "leave-initrd")  # PCR 11 moves past the signed value
        with pytest.raises(StatusError) as refused:
            unlock(volume, token, client, signed=_signed_policy(signed["pub"], entry))
    # PolicyPCR folds in the live PCR 11; PolicyAuthorize then finds the session's digest is not
    # the approved policy: TPM_RC_VALUE on its first parameter
    assert refused.value.code == 0x1C4


def test_tpm2_tools_unseal_a_signed_policy_token_cvm_enrolled(
        vtpm: dict[str, Any], signed: dict[str, Any]) -> None:  # noqa: F811
    """The other direction: cvm enrolls the token and signs the policy; tpm2-tools check the
    signature, authorize the policy and unseal, and the secret opens the keyslot."""
    _measure_uki(vtpm, signed["uki"])
    run, workdir = vtpm["run"], vtpm["dir"]
    image = _luks_image(vtpm, "ours.img")
    client = _client(vtpm)
    token = _enroll_signed(image, client, signed["pub"])
    live = client.pcr_read(SELECTION)[2]
    entry = next(e for e in parse_pcr_signature(pcr_signature(
        signed["uki"], load_private_key(signed["key"]), signed["pub"]))
        if e.policy == PolicyDigest.start().pcr(SELECTION, live).value)
    (workdir / "pcr.policy").write_bytes(entry.policy)
    (workdir / "pcr.sig").write_bytes(entry.signature)
    (workdir / "tok.priv").write_bytes(token.blob.private.to_tpm2b())
    (workdir / "tok.pub").write_bytes(token.blob.public.to_tpm2b())
    run("tpm2_loadexternal", "-G", "rsa", "-C", "o", "-u", "pub.pem", "-c", "signer.ctx",
        "-n", "signer.name")
    run("tpm2_verifysignature", "-c", "signer.ctx", "-g", "sha256", "-m", "pcr.policy", "-s",
        "pcr.sig", "-f", "rsassa", "-t", "verified.tkt")
    run("tpm2_flushcontext", "-t")
    run("tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "ecc256:aes128cfb", "-c",
        "srk.ctx")
    run("tpm2_load", "-C", "srk.ctx", "-u", "tok.pub", "-r", "tok.priv", "-c", "tok.ctx")
    run("tpm2_flushcontext", "-t")
    run("tpm2_startauthsession", "--policy-session", "-S", "session.ctx")
    run("tpm2_policypcr", "-S", "session.ctx", "-l", f"sha256:{UKI_PCR}")
    run("tpm2_policyauthorize", "-S", "session.ctx", "-i", "pcr.policy", "-n", "signer.name",
        "-t", "verified.tkt")
    run("tpm2_unseal", "-p", "session:session.ctx", "-c", "tok.ctx", "-o", "secret.bin")
    run("tpm2_flushcontext", "session.ctx")
    passphrase = base64.b64encode((workdir / "secret.bin").read_bytes()).decode()
    run("cryptsetup", "open", "--test-passphrase", "--key-file", "-", str(image),
        stdin=passphrase)
