"""The initramfs (:mod:`cvm.guest.boot.initramfs`), decision by decision: the root it accepts,
the tokens it tries and in which order, the keyslots of a token, the signed policy it picks from
the UKI's ``.pcrsig``, where the volume key lives, and the workload's round trip — each refusal
with its error class and message."""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cvm.crypto.drbg import SeededRandom
from cvm.crypto.tpm_keys import public_key_fingerprint
from cvm.disk.file_store import FileStore
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import StateError, StatusError, UsageError, WrongKeyError
from cvm.formats.initramfs import PCR_SIGNATURE_IN_UKI, InitramfsManifest, build_initramfs
from cvm.formats.pcr_signature import PcrSignatureEntry, pcr_signature_bytes
from cvm.formats.tpm2.command import Response
from cvm.formats.tpm2.constants import TpmAlg, TpmCc
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc
from cvm.guest.boot.initramfs import WORKLOAD_SIZE, Initramfs, RootOpened
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.luks_token import KEYSLOT_KDF, SystemdTpm2Token
from cvm.guest.tpm.seal import SealPolicy, seal
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vm import Mode
from cvm.host.vmm import Hypervisor
from cvm.image.boot_chain import make_uki
from cvm.vtpm.engine import Tpm
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.templates import public_from_pem

SEVEN = PcrSelectionList.of("sha256", [7])
ELEVEN = PcrSelectionList.of("sha256", [11])
KEY_GPA, DATA_GPA = 2 * PAGE_SIZE, 3 * PAGE_SIZE
PARTITION = "0fc63daf-8483-4772-8e79-3d69d8477de4"
_SIGNER = rsa.generate_private_key(65537, 2048)
PEM = _SIGNER.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class RootDisk:
    """A boot disk as the initramfs uses it: only its root partition."""

    storage: FileStorage

    def root_partition(self) -> FileStorage:
        return self.storage


@dataclass
class Setup:
    volume: Luks2Volume
    volume_key: bytes
    client: TpmClient
    hv: Hypervisor
    kernel: SevGuest
    disk: RootDisk

    def add_token(self, keyslots: tuple[int, ...] | None = None, values: list[bytes] | None = None,
                  signed: bool = False, bank: str = "sha256",
                  pubkey_pcrs: tuple[int, ...] = (11,)) -> int:
        """Seal a fresh secret to PCR 7 (its live value, or ``values``), add its keyslot and a
        token naming ``keyslots`` (the new keyslot when None); returns the token id."""
        secret = hashlib.sha256(f"secret {len(self.volume.tokens)}".encode()).digest()
        selection = PcrSelectionList.of(bank, [7])
        live = values or self.client.pcr_read(selection)[2]
        signer = public_from_pem(PEM) if signed else None
        digest = SealPolicy(selection, signer=signer).digest(live).value
        blob = seal(self.client, secret, digest)
        slot = self.volume.add_keyslot(self.volume_key, base64.b64encode(secret), KEYSLOT_KDF)
        token = SystemdTpm2Token(keyslots if keyslots is not None else (slot,), blob, (7,),
                                 digest, bank, pubkey_pem=PEM if signed else None,
                                 pubkey_pcrs=pubkey_pcrs if signed else ())
        return self.volume.add_token(token.to_json())

    def initramfs(self, uuid: str | None = None, pcr_signature: str | None = None,
                  uki: bytes | None = None, data_dir: str = "/srv/data") -> Initramfs:
        manifest = InitramfsManifest(uuid or self.volume.uuid, PARTITION, pcr_signature,
                                     data_dir=data_dir)
        initrd = build_initramfs(manifest, "ID=cvm\n")
        return Initramfs(self.kernel, self.client, self.disk, initrd, uki, KEY_GPA, DATA_GPA,
                         SeededRandom(b"workload"))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    image = tmp_path / "root.img"
    with image.open("wb") as handle:
        handle.truncate(17 << 20)
    tpm = Tpm(random=SeededRandom(b"initramfs checks"), clock=lambda: 1000.0)
    client = TpmClient(tpm.execute, random=SeededRandom(b"initramfs checks client"))
    client.startup()
    client.pcr_extend(7, {TpmAlg.SHA256: hashlib.sha256(b"shim").digest()})
    hv = Hypervisor(Machine(16 << 20))
    guest = hv.create_vm(Mode.SEV_SNP, 8 * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, 8 * PAGE_SIZE)
    with FileStorage(image) as storage:
        volume = Luks2Volume.format(storage, b"recovery", KdfSpec("pbkdf2", iterations=1000))
        key = volume.unlock(b"recovery")
        FileStore.format(volume.data_device(key)).write("/etc/hostname", b"cvm\n")
        yield Setup(volume, key, client, hv, kernel, RootDisk(storage))


def _host_reads(setup: Setup, gpa: int) -> bytes:
    spa = setup.kernel.vm.translate(gpa)
    assert spa is not None
    return setup.hv.machine.host_read(spa, PAGE_SIZE)


def test_the_root_opens_and_the_volume_key_lives_in_a_private_guest_page(setup: Setup) -> None:
    number = setup.add_token()
    initramfs = setup.initramfs()
    assert initramfs.secrets() == {}
    opened = initramfs.open_root()
    assert opened == RootOpened(number, 1, "pcrs", (7,), "sha256", setup.volume.uuid,
                                ("/etc/hostname",))
    assert initramfs.key_size == len(setup.volume_key) == 64
    assert setup.kernel.cpu.read(KEY_GPA, 64) == setup.volume_key
    assert setup.volume_key[:16] not in _host_reads(setup, KEY_GPA)
    assert initramfs.secrets()["volume key"] == setup.volume_key


@pytest.mark.parametrize(("data_dir", "path"), [("/srv/data", "/srv/data/log"),
                                               ("/srv/data/", "/srv/data/log"),
                                               ("/srv/X", "/srv/X/log")])
def test_the_workload_round_trips_through_guest_pages_and_the_root(setup: Setup,
                                                                 data_dir: str, path: str
                                                                 ) -> None:
    setup.add_token()
    initramfs = setup.initramfs(data_dir=data_dir)
    with pytest.raises(StateError, match=r"^the workload runs once the root is open$"):
        initramfs.run_workload()
    initramfs.open_root()
    result = initramfs.run_workload()
    written = SeededRandom(b"workload")(WORKLOAD_SIZE)
    assert (result.path, result.size, result.round_trip) == (path, 4096, True)
    assert result.data_sha256 == hashlib.sha256(written).hexdigest()
    assert setup.kernel.cpu.read(DATA_GPA, PAGE_SIZE) == written
    assert setup.kernel.cpu.read(DATA_GPA + PAGE_SIZE, PAGE_SIZE) == written
    assert initramfs.store is not None and initramfs.store.read(path) == written
    assert initramfs.secrets()["workload data"] == written


def test_an_older_image_root_of_cvm_filestore_1_opens_read_only(setup: Setup) -> None:
    """A root written before cvm-filestore/2 (one header, in block 0): the initramfs opens it
    and lists its files; the workload's write is refused, and the root is left as it was."""
    device = setup.volume.data_device(setup.volume_key)
    block = bytearray(2 * 4096)
    struct.pack_into("<8sIIQQI", block, 0, b"CVMFS001", 1, 4096, 16, 2, 1)
    struct.pack_into("<40sQQQ", block, 0x40, b"/etc/hostname", 1, 4, 1)
    block[4096:4100] = b"old\n"
    device.write(0, bytes(block))
    setup.add_token()
    initramfs = setup.initramfs()
    assert initramfs.open_root().files == ("/etc/hostname",)
    assert initramfs.store is not None and initramfs.store.read("/etc/hostname") == b"old\n"
    with pytest.raises(UsageError, match="cvm-filestore/1 store is read only"):
        initramfs.run_workload()
    assert device.read(0, 2 * 4096) == bytes(block)


def test_another_luks_volume_is_refused(setup: Setup) -> None:
    setup.add_token()
    other = "12345678-1234-4234-8234-123456789abc"
    initramfs = setup.initramfs(uuid=other)
    with pytest.raises(StateError) as refused:
        initramfs.open_root()
    assert str(refused.value) == (f"initramfs: the root partition holds LUKS2 volume "
                                  f"{setup.volume.uuid}, the initrd asks for {other}")
    # the manifest was read, the root is not open: no workload
    with pytest.raises(StateError, match=r"^the workload runs once the root is open$"):
        initramfs.run_workload()


def test_a_root_without_a_tpm2_token_is_refused(setup: Setup) -> None:
    setup.volume.add_token({"type": "cvm-other", "keyslots": []})
    with pytest.raises(StateError,
                       match=r"^initramfs: the root's LUKS2 header has no systemd-tpm2 token$"):
        setup.initramfs().open_root()


def test_tokens_are_tried_in_order_until_one_unseals(setup: Setup) -> None:
    setup.add_token(values=[b"\x01" * 32])  # sealed to another boot
    second = setup.add_token()
    setup.add_token(values=[b"\x02" * 32])
    assert setup.initramfs().open_root().token == second


def test_when_no_token_unseals_the_last_refusal_is_reported(setup: Setup) -> None:
    setup.add_token(signed=True)  # token 0: no .pcrsig to use (FormatError)
    setup.add_token(values=[b"\x01" * 32])  # token 1: the vTPM refuses (policy check)
    with pytest.raises(StatusError) as refused:
        setup.initramfs().open_root()
    assert refused.value.code == 0x99D
    assert str(refused.value).startswith(
        "initramfs: the vTPM refused to unseal the root key of any of 2 token(s) (the PCRs "
        "differ from the sealed policy): TPM command UNSEAL failed: TPM_RC_POLICY_FAIL")


def test_a_refusal_without_a_tpm_code_is_reported_with_code_0(setup: Setup) -> None:
    setup.add_token(signed=True)
    with pytest.raises(StatusError) as refused:
        setup.initramfs().open_root()
    assert refused.value.code == 0
    assert str(refused.value) == ("initramfs: none of 1 token(s) could unseal the root key: "
                                  "initramfs: a signed-policy token, but no .pcrsig to use")


def _answering_unseal(setup: Setup, code: int) -> Setup:
    """``setup`` whose vTPM answers every TPM2_Unseal with the response code ``code``."""
    def transport(command: bytes) -> bytes:
        if int.from_bytes(command[6:10], "big") == TpmCc.UNSEAL:
            return Response(code).to_bytes(False)
        return setup.client.transport(command)
    return replace(setup, client=TpmClient(transport, random=SeededRandom(b"unseal")))


REFUSED = "initramfs: the vTPM refused to unseal the root key of any of 1 token(s)"


@pytest.mark.parametrize(("code", "told"), [
    (TpmRc.POLICY_FAIL | 0x900, f"{REFUSED} (the PCRs differ from the sealed policy): "),
    (TpmRc.PCR_CHANGED, f"{REFUSED} (the PCRs differ from the sealed policy): "),
    (TpmRc.AUTH_FAIL | 0x900, f"{REFUSED}: TPM command UNSEAL failed: "),
    (TpmRc.HANDLE | 0x100, f"{REFUSED}: TPM command UNSEAL failed: "),
    (TpmRc.FAILURE, f"{REFUSED}: TPM command UNSEAL failed: "),
])
def test_only_a_policy_refusal_is_blamed_on_the_pcrs(setup: Setup, code: int, told: str) -> None:
    setup.add_token()
    with pytest.raises(StatusError) as refused:
        _answering_unseal(setup, code).initramfs().open_root()
    assert refused.value.code == code
    assert str(refused.value).startswith(told)


def test_a_blob_sealed_by_another_tpm_is_refused_for_its_integrity(setup: Setup) -> None:
    other = Tpm(random=SeededRandom(b"another vTPM"), clock=lambda: 1000.0)
    client = TpmClient(other.execute, random=SeededRandom(b"another vTPM client"))
    client.startup()
    digest = SealPolicy(SEVEN).digest(setup.client.pcr_read(SEVEN)[2]).value
    token = SystemdTpm2Token((0,), seal(client, b"\x00" * 32, digest), (7,), digest, "sha256")
    setup.volume.add_token(token.to_json())
    with pytest.raises(StatusError) as refused:
        setup.initramfs().open_root()
    assert "(the PCRs differ" not in str(refused.value)
    assert "TPM_RC_INTEGRITY" in str(refused.value)


def test_a_malformed_vtpm_answer_does_not_blame_the_pcrs(setup: Setup) -> None:
    setup.add_token()
    def transport(command: bytes) -> bytes:
        reply = setup.client.transport(command)
        return reply[:-2] if int.from_bytes(command[6:10], "big") == TpmCc.UNSEAL else reply
    client = TpmClient(transport, random=SeededRandom(b"short"))
    with pytest.raises(StatusError) as refused:
        replace(setup, client=client).initramfs().open_root()
    assert refused.value.code == 0
    assert str(refused.value).startswith(
        "initramfs: none of 1 token(s) could unseal the root key: ")


def test_a_tokens_keyslots_are_tried_until_one_yields_the_volume_key(setup: Setup) -> None:
    number = setup.add_token(keyslots=(0, 1))  # 0 is the recovery passphrase's keyslot
    opened = setup.initramfs().open_root()
    assert (opened.token, opened.keyslot) == (number, 1)


def test_a_token_whose_keyslots_do_not_open_is_refused(setup: Setup) -> None:
    setup.add_token(keyslots=(0,))
    with pytest.raises(WrongKeyError, match=r"^initramfs: keyslot\(s\) \[0\] of the token do "
                                            r"not open with its secret$"):
        setup.initramfs().open_root()


# -- signed policies ---------------------------------------------------------------------------
def _entry(approved: bytes, bank: str = "sha256", pcrs: tuple[int, ...] = (11,)
           ) -> PcrSignatureEntry:
    signature = _SIGNER.sign(approved, padding.PKCS1v15(), hashes.SHA256())
    return PcrSignatureEntry(bank, pcrs, public_key_fingerprint(PEM), approved, signature)


def _uki(initramfs: Initramfs, entries: tuple[PcrSignatureEntry, ...] | None) -> bytes:
    pcrsig = pcr_signature_bytes(entries) if entries is not None else None
    return make_uki(b"kernel", "console=ttyS0", initramfs.initrd, pcrsig=pcrsig)


def _signed_initramfs(setup: Setup, entries: tuple[PcrSignatureEntry, ...] | None,
                      in_manifest: bool = True) -> Initramfs:
    signature = PCR_SIGNATURE_IN_UKI if in_manifest else None
    first = setup.initramfs(pcr_signature=signature)
    return setup.initramfs(pcr_signature=signature, uki=_uki(first, entries))


def test_the_signed_policy_matching_the_live_pcrs_opens_the_root(setup: Setup) -> None:
    number = setup.add_token(signed=True)
    live = setup.client.pcr_read(ELEVEN)[2]
    good = PolicyDigest.start().pcr(ELEVEN, live).value
    other = PolicyDigest.start().pcr(ELEVEN, [b"\x0b" * 32]).value
    entries = (_entry(other), _entry(good, pcrs=(11, 12)), _entry(good))
    opened = _signed_initramfs(setup, entries).open_root()
    assert opened == RootOpened(number, 1, "signed", (7, 11), "sha256", setup.volume.uuid,
                                ("/etc/hostname",))


@pytest.mark.parametrize(("in_manifest", "uki"), [(True, True), (False, True), (True, False)])
def test_a_signed_token_needs_the_manifest_and_the_uki_to_carry_pcrsig(
        setup: Setup, in_manifest: bool, uki: bool) -> None:
    setup.add_token(signed=True)
    live = setup.client.pcr_read(ELEVEN)[2]
    entries = (_entry(PolicyDigest.start().pcr(ELEVEN, live).value),)
    initramfs = _signed_initramfs(setup, entries, in_manifest)
    if not uki:
        initramfs.uki = None
    if in_manifest and uki:
        assert initramfs.open_root().policy == "signed"
        return
    with pytest.raises(StatusError, match=r"a signed-policy token, but no \.pcrsig to use$"):
        initramfs.open_root()


def test_a_uki_without_a_pcrsig_section_is_refused(setup: Setup) -> None:
    setup.add_token(signed=True)
    with pytest.raises(StatusError, match=r": initramfs: the UKI has no \.pcrsig section$"):
        _signed_initramfs(setup, None).open_root()


def test_a_pcrsig_without_the_live_policy_is_refused(setup: Setup) -> None:
    setup.add_token(signed=True)
    live = setup.client.pcr_read(ELEVEN)[2]
    good = PolicyDigest.start().pcr(ELEVEN, live).value
    entries = (_entry(good, pcrs=(7, 11)),
               _entry(PolicyDigest.start().pcr(ELEVEN, [b"\x0b" * 32]).value))
    with pytest.raises(StatusError, match=r": initramfs: \.pcrsig: no signed policy for the "
                                          r"token's key and the live PCR 11 \(sha256\)$"):
        _signed_initramfs(setup, entries).open_root()


def test_a_signed_policy_of_another_bank_is_not_used(setup: Setup) -> None:
    """A token of the sha1 bank: the sha256 entry for PCR 11 with the policy over the live
    sha1 value is not its policy."""
    setup.add_token(signed=True, bank="sha1")
    selection = PcrSelectionList.of("sha1", [11])
    good = PolicyDigest.start().pcr(selection, setup.client.pcr_read(selection)[2]).value
    with pytest.raises(StatusError, match=r": initramfs: \.pcrsig: no signed policy for the "
                                          r"token's key and the live PCR 11 \(sha1\)$"):
        _signed_initramfs(setup, (_entry(good),)).open_root()


def test_the_refusal_names_every_signed_pcr(setup: Setup) -> None:
    setup.add_token(signed=True, pubkey_pcrs=(11, 12))
    with pytest.raises(StatusError, match=r": initramfs: \.pcrsig: no signed policy for the "
                                          r"token's key and the live PCR 11\+12 \(sha256\)$"):
        _signed_initramfs(setup, (_entry(b"\x00" * 32, pcrs=(11, 12)),)).open_root()
