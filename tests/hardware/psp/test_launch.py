"""SNP_LAUNCH_START/UPDATE/FINISH of the emulated PSP: policy, page states, CPUID, ID block,
TCB — and the digest it computes equals the owner's prediction."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cvm.crypto import amd_ecdsa
from cvm.errors import StatusError
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.id_auth import IdAuthInfo, SnpPublicKey, SnpSignature
from cvm.formats.snp.id_block import IdBlock
from cvm.formats.snp.page_info import PageType
from cvm.formats.snp.sev_hashes import SevHashTable
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.hardware.psp.firmware import FirmwareVersion, SecureProcessor
from cvm.hardware.psp.status import SevStatus
from cvm.host.launch import launch_snp
from cvm.host.vmm import Hypervisor
from cvm.image.measurement import VcpuConfig, snp_launch_digest

Launch = Callable[..., Any]
MILAN = 0x00A00F11


@pytest.mark.parametrize(
    ("vcpus", "features", "kernel"),
    [(1, 0x1, False), (2, 0x1, True), (4, 0x21, True), (3, 0x21, False)],
)
def test_psp_digest_equals_prediction(
    launch: Launch, firmware: bytes, vcpus: int, features: int, kernel: bool
) -> None:
    hashes = SevHashTable.for_boot(b"vmlinuz", b"initrd", "ro quiet") if kernel else None
    launched, _ = launch(vcpus=vcpus, guest_features=features, hashes=hashes)
    image = OvmfImage.parse(firmware)
    predicted = snp_launch_digest(image, VcpuConfig(vcpus, MILAN, features), hashes)
    assert launched.measurement == predicted


def test_debian_ovmf_launch_equals_prediction(platform: tuple[Hypervisor, SecureProcessor]) -> None:
    path = Path("/usr/share/OVMF/OVMF_CODE.fd")
    if not path.exists():
        pytest.skip("Debian's ovmf package is not installed")
    hv, psp = platform
    launched = launch_snp(hv, psp, path.read_bytes())
    image = OvmfImage.parse(path.read_bytes())
    assert launched.measurement == snp_launch_digest(image, VcpuConfig(1, MILAN))


@pytest.mark.parametrize(
    ("policy", "status"),
    [
        (0x10000, SevStatus.INVALID_PARAM),  # reserved bit 17 clear
        (0x1_0000_0030_000, SevStatus.INVALID_PARAM),  # reserved high bit
        (0x20000, SevStatus.POLICY_FAILURE),  # SMT forbidden on an SMT platform
        (0x30000 | 0xFF00, SevStatus.POLICY_FAILURE),  # needs ABI 255.0
        (0x30000 | 1 << 22, SevStatus.POLICY_FAILURE),  # AES-256-XTS required
        (0x30000 | 1 << 23, SevStatus.POLICY_FAILURE),  # RAPL must be disabled
        (0x30000 | 1 << 24, SevStatus.POLICY_FAILURE),  # ciphertext hiding required
    ],
)
def test_launch_start_enforces_the_policy(
    platform: tuple[Hypervisor, SecureProcessor], policy: int, status: SevStatus
) -> None:
    hv, psp = platform
    hv.machine.engine.activate(7)
    with pytest.raises(StatusError) as refused:
        psp.snp_launch_start(7, policy)
    assert refused.value.code == status


def test_launch_start_accepts_what_the_platform_honours(
    platform: tuple[Hypervisor, SecureProcessor],
) -> None:
    hv, psp = platform
    with pytest.raises(StatusError) as no_key:
        psp.snp_launch_start(9, 0x30000)
    assert no_key.value.code == SevStatus.INVALID_ASID
    hv.machine.engine.activate(9)
    psp.snp_launch_start(9, 0x30000 | 1 << 19 | 1 << 20 | 0x0137)  # debug, single socket, ABI 1.55
    with pytest.raises(StatusError) as owned:
        psp.snp_launch_start(9, 0x30000)
    assert owned.value.code == SevStatus.ASID_OWNED
    two_sockets = SecureProcessor(hv.machine, psp._fuses, sockets=2)
    with pytest.raises(StatusError) as single:
        two_sockets.snp_launch_start(9, 0x30000 | 1 << 20)
    assert single.value.code == SevStatus.POLICY_FAILURE


def test_launch_update_page_rules(platform: tuple[Hypervisor, SecureProcessor]) -> None:
    hv, psp = platform
    machine = hv.machine
    machine.engine.activate(5)
    machine.engine.activate(6)
    handle = psp.snp_launch_start(5, 0x30000)
    spa = hv.allocate_page()
    with pytest.raises(StatusError) as unassigned:
        psp.snp_launch_update(handle, spa, PageType.NORMAL)
    assert unassigned.value.code == SevStatus.INVALID_PAGE_STATE
    machine.rmp.rmpupdate(spa, assigned=True, asid=6, gpa=0x1000)
    with pytest.raises(StatusError) as foreign:
        psp.snp_launch_update(handle, spa, PageType.NORMAL)
    assert foreign.value.code == SevStatus.INVALID_PAGE_OWNER
    machine.rmp.rmpupdate(spa, assigned=False)
    machine.host_write(spa, b"\xcc" * 0x1000)
    machine.rmp.rmpupdate(spa, assigned=True, asid=5, gpa=0x1000)
    psp.snp_launch_update(handle, spa, PageType.ZERO)
    entry = machine.rmp.entry(spa)
    assert entry.validated and entry.asid == 5 and entry.gpa == 0x1000
    assert machine.engine.read(5, spa, 0x1000) == bytes(0x1000)  # zeroed, encrypted
    assert machine.host_read(spa, 0x1000) != bytes(0x1000)
    with pytest.raises(StatusError) as again:
        psp.snp_launch_update(handle, spa, PageType.NORMAL)
    assert again.value.code == SevStatus.INVALID_PAGE_STATE
    psp.snp_launch_finish(handle)
    with pytest.raises(StatusError) as finished:
        psp.snp_launch_update(handle, spa, PageType.NORMAL)
    assert finished.value.code == SevStatus.INVALID_GUEST_STATE


def test_launched_pages_are_encrypted_and_validated(launch: Launch, firmware: bytes) -> None:
    launched, _ = launch()
    assert launched.cpuid_corrections == ()
    vm = launched.guest.vm
    machine = vm.machine
    gpa = OvmfImage.parse(firmware).gpa
    spa = vm.translate(gpa)
    assert spa is not None
    assert machine.host_read(spa, 0x1000) != firmware[:0x1000]
    assert machine.engine.read(vm.asid, spa, 0x1000) == firmware[:0x1000]
    assert machine.rmp.entry(spa).validated
    assert not machine.rmp.entry(vm.translate(0) or 0).validated  # RAM: the guest validates


def test_lying_cpuid_is_corrected_or_refused(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch
) -> None:
    hv, _ = platform
    eax, ebx, ecx, edx = hv.cpuid[0x8000_001F]
    hv.cpuid[0x8000_001F] = (eax, (ebx & ~0x3F) | 47, ecx, edx)  # claim C-bit 47
    launched, _ = launch()
    assert any("0x8000001f" in line and "EBX" in line for line in launched.cpuid_corrections)
    with pytest.raises(StatusError) as refused:
        launch(retry_cpuid=False)
    assert refused.value.code == SevStatus.INVALID_PARAM
    hv.cpuid[1] = (MILAN, 0, 1 << 5 | 1 << 31, 0)  # VMX, which AMD silicon lacks, + HV bit
    launched, _ = launch()
    assert any("0x00000001" in line and "ECX" in line for line in launched.cpuid_corrections)


def test_vmsa_without_snp_active_is_refused(launch: Launch) -> None:
    with pytest.raises(StatusError) as refused:
        launch(guest_features=0)
    assert refused.value.code == SevStatus.INVALID_PARAM


def _sign(key: amd_ecdsa.PrivateKey, message: bytes) -> SnpSignature:
    r, s = amd_ecdsa.sign(key, message)
    return SnpSignature(int.from_bytes(r, "little"), int.from_bytes(s, "little"))


def _public(key: amd_ecdsa.PrivateKey) -> SnpPublicKey:
    return SnpPublicKey(*amd_ecdsa.public_key_coordinates(key.public_key()))


def _id_material(
    ld: bytes, policy: int = 0x30000, *, corrupt: bool = False, corrupt_author: bool = False
) -> dict[str, bytes]:
    id_key, author_key = amd_ecdsa.generate_private_key(), amd_ecdsa.generate_private_key()
    block = IdBlock(ld, family_id=b"F" * 16, image_id=b"I" * 16, guest_svn=3, policy=policy)
    signature = _sign(id_key, block.to_bytes())
    if corrupt:
        signature = SnpSignature(signature.r, signature.s ^ 1)
    author_signature = _sign(author_key, _public(id_key).to_bytes())
    if corrupt_author:
        author_signature = SnpSignature(author_signature.r ^ 1, author_signature.s)
    auth = IdAuthInfo(signature, _public(id_key), author_signature, _public(author_key))
    return {"id_block": block.to_bytes(), "id_auth": auth.to_bytes()}


def test_id_block_is_checked_and_recorded(
    launch: Launch, requester: Launch, firmware: bytes
) -> None:
    predicted = snp_launch_digest(OvmfImage.parse(firmware), VcpuConfig(1, MILAN))
    material = _id_material(predicted)
    launched, _ = launch(**material)
    response = requester(launched).report(bytes(64))
    report = AttestationReport.from_bytes(response.report)
    auth = IdAuthInfo.from_bytes(material["id_auth"])
    assert report.family_id == b"F" * 16 and report.image_id == b"I" * 16
    assert report.guest_svn == 3
    assert report.id_key_digest == auth.id_key.digest()
    assert auth.author_key is not None
    assert report.author_key_digest == auth.author_key.digest()
    assert report.signer_info.author_key_en


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"ld": b"\x01" * 48}, SevStatus.BAD_MEASUREMENT),
        ({"policy": 0x30000 | 1 << 19}, SevStatus.POLICY_FAILURE),
        ({"corrupt": True}, SevStatus.BAD_SIGNATURE),
        ({"corrupt_author": True}, SevStatus.BAD_SIGNATURE),
    ],
)
def test_bad_id_blocks_are_refused(
    launch: Launch, firmware: bytes, change: dict[str, Any], status: SevStatus
) -> None:
    predicted = snp_launch_digest(OvmfImage.parse(firmware), VcpuConfig(1, MILAN))
    fields = dict(change)  # the parameter itself stays intact for a rerun in this process
    ld = fields.pop("ld", predicted)
    with pytest.raises(StatusError) as refused:
        launch(**_id_material(ld, **fields))
    assert refused.value.code == status


def test_tcb_update_commit_and_downgrade(platform: tuple[Hypervisor, SecureProcessor]) -> None:
    _, psp = platform
    old = psp.current_tcb
    new = TcbVersion(old.boot_loader, old.tee, old.snp + 2, old.microcode + 1)
    psp.download_firmware(new, FirmwareVersion(1, 57, 3))
    assert psp.current_tcb == new and psp.committed_tcb == old
    psp.download_firmware(old, FirmwareVersion())  # back down to the committed floor
    assert psp.reported_tcb == old
    psp.download_firmware(new, FirmwareVersion(1, 57, 3))
    psp.commit()
    with pytest.raises(StatusError) as rollback:
        psp.download_firmware(old, FirmwareVersion())
    assert rollback.value.code == SevStatus.BAD_SVN
    psp.config(old)
    assert psp.reported_tcb == old and psp.current_tcb == new
    with pytest.raises(StatusError):
        psp.config(TcbVersion(new.boot_loader, new.tee, new.snp + 1, new.microcode))


def test_debug_decrypt_needs_the_debug_policy(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, firmware: bytes
) -> None:
    _, psp = platform
    gpa = OvmfImage.parse(firmware).gpa
    private, _ = launch()
    spa = private.guest.vm.translate(gpa)
    assert spa is not None
    with pytest.raises(StatusError) as refused:
        psp.snp_dbg_decrypt(private.handle, spa)
    assert refused.value.code == SevStatus.POLICY_FAILURE
    debug, _ = launch(policy=0x30000 | 1 << 19)
    spa = debug.guest.vm.translate(gpa)
    assert spa is not None
    assert psp.snp_dbg_decrypt(debug.handle, spa) == firmware[:0x1000]
