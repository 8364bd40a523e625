"""The PSP's checked launch pages, SNP_LAUNCH_FINISH and SNP_DBG_DECRYPT: every refusal with its
status and message, the guest states each command needs, and what a finished launch records."""

from __future__ import annotations

import hashlib

import pytest
from tests.hardware.psp.refusals import refused as _refused

from cvm.crypto import amd_ecdsa
from cvm.formats.snp.cpuid_page import CpuidFunction, CpuidPage
from cvm.formats.snp.id_auth import IdAuthInfo, SnpPublicKey, SnpSignature
from cvm.formats.snp.id_block import IdBlock
from cvm.formats.snp.page_info import ZERO_DIGEST, PageType, extend, measure_record
from cvm.formats.snp.vmsa import Vmsa
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.psp.status import SevStatus
from cvm.host.vmm import Hypervisor

Platform = tuple[Hypervisor, SecureProcessor]
ASID = 5
PAGE = 0x1000
GPA = 0x20000
CONTENTS = b"\x42" * PAGE
FINISH = "SNP_LAUNCH_FINISH"


def _start(platform: Platform, policy: int = 0x30000) -> int:
    hv, psp = platform
    hv.machine.engine.activate(ASID)
    return psp.snp_launch_start(ASID, policy)


def _page(hv: Hypervisor, gpa: int = GPA, data: bytes = CONTENTS, asid: int = ASID) -> int:
    """A pre-guest page of ``asid`` at ``gpa`` holding ``data``."""
    spa = hv.allocate_page()
    hv.machine.host_write(spa, data)
    hv.machine.rmp.rmpupdate(spa, assigned=True, asid=asid, gpa=gpa)
    return spa


def _launched(platform: Platform, policy: int = 0x30000) -> tuple[int, int, bytes]:
    """A guest in GSTATE_LAUNCH with one NORMAL page: (handle, its SPA, the digest)."""
    hv, psp = platform
    handle = _start(platform, policy)
    spa = _page(hv)
    psp.snp_launch_update(handle, spa, PageType.NORMAL)
    return handle, spa, extend(ZERO_DIGEST, PageType.NORMAL, GPA, CONTENTS)


# -- SNP_LAUNCH_UPDATE of the checked types -----------------------------------------------------
def test_launch_update_refuses_an_unknown_page_type_and_a_guest_not_in_launch(
    platform: Platform,
) -> None:
    hv, psp = platform
    handle, _, _ = _launched(platform)
    spa = _page(hv, GPA + PAGE)
    command = "SNP_LAUNCH_UPDATE"
    _refused(lambda: psp.snp_launch_update(handle, spa, 9), SevStatus.INVALID_PARAM, command,
             "9 is not a valid PageType")
    _refused(lambda: psp.snp_launch_update(7, spa, PageType.NORMAL), SevStatus.INVALID_GUEST,
             command, "no guest with handle 7")
    psp.snp_launch_finish(handle)
    _refused(lambda: psp.snp_launch_update(handle, spa, PageType.NORMAL),
             SevStatus.INVALID_GUEST_STATE, command, "guest is GSTATE_RUNNING")


def test_a_vmsa_without_snp_active_is_refused_by_name(platform: Platform) -> None:
    hv, psp = platform
    handle = _start(platform)
    spa = _page(hv, data=Vmsa({"sev_features": 0x20}).to_bytes())
    _refused(lambda: psp.snp_launch_update(handle, spa, PageType.VMSA), SevStatus.INVALID_PARAM,
             "SNP_LAUNCH_UPDATE", "VMSA SEV_FEATURES lacks SNPActive")
    assert psp.guest_measurement(handle) == ZERO_DIGEST


def test_a_cpuid_page_that_does_not_parse_is_refused_with_the_reason(platform: Platform) -> None:
    hv, psp = platform
    handle = _start(platform)
    spa = _page(hv, data=(65).to_bytes(4, "little") + bytes(PAGE - 4))
    _refused(lambda: psp.snp_launch_update(handle, spa, PageType.CPUID), SevStatus.INVALID_PARAM,
             "SNP_LAUNCH_UPDATE", "SNP CPUID page: COUNT 65 exceeds 64")


def test_an_out_of_policy_cpuid_page_is_refused_listing_each_register_and_corrected(
    platform: Platform,
) -> None:
    hv, psp = platform
    handle = _start(platform)
    sev = psp.cpuid[(0x8000_001F, 0)]
    lying = CpuidPage(
        (
            CpuidFunction(7, 0, ebx=0xFFFF_FFFF),
            CpuidFunction(0x8000_001F, 0, eax=sev[0], ebx=(sev[1] & ~0x3F) | 47),
        )
    )
    spa = _page(hv, data=lying.to_bytes())
    reasons = (
        f"CPUID 0x00000007/0 EBX 0xffffffff is not allowed (subset of "
        f"{psp.cpuid[(7, 0)][1]:#010x}); corrected to {psp.cpuid[(7, 0)][1]:#010x}; "
        f"CPUID 0x8000001f/0 EBX {(sev[1] & ~0x3F) | 47:#010x} is not allowed (exact of "
        f"{sev[1]:#010x}); corrected to {sev[1]:#010x}"
    )
    _refused(lambda: psp.snp_launch_update(handle, spa, PageType.CPUID), SevStatus.INVALID_PARAM,
             "SNP_LAUNCH_UPDATE", f"CPUID page rejected: {reasons}")
    corrected = CpuidPage.from_bytes(hv.machine.host_read(spa, PAGE))
    assert corrected.functions[0].ebx == psp.cpuid[(7, 0)][1]
    assert corrected.functions[1].ebx == sev[1]
    assert psp.guest_measurement(handle) == ZERO_DIGEST
    psp.snp_launch_update(handle, spa, PageType.CPUID)  # the retry with the corrected table
    assert psp.guest_measurement(handle) == extend(ZERO_DIGEST, PageType.CPUID, GPA)


@pytest.mark.parametrize("kind", [PageType.NORMAL, PageType.SECRETS, PageType.CPUID])
def test_an_imi_page_is_measured_as_one(platform: Platform, kind: PageType) -> None:
    """IMI_PAGE reaches the PAGE_INFO of plain and firmware-checked pages alike."""
    hv, psp = platform
    handle = _start(platform)
    data = CpuidPage(()).to_bytes() if kind is PageType.CPUID else CONTENTS
    spa = _page(hv, data=data)
    psp.snp_launch_update(handle, spa, kind, imi_page=True)
    contents = hashlib.sha384(data).digest() if kind is PageType.NORMAL else ZERO_DIGEST
    assert psp.guest_measurement(handle) == measure_record(ZERO_DIGEST, contents, kind, GPA, True)
    assert psp.guest_measurement(handle) != extend(ZERO_DIGEST, kind, GPA, data)


def test_each_checked_page_is_counted(platform: Platform) -> None:
    hv, psp = platform
    handle = _start(platform)
    spas = [_page(hv, GPA + n * PAGE, CpuidPage(()).to_bytes()) for n in range(3)]
    psp.snp_launch_update_pages(handle, spas, PageType.CPUID)
    assert psp._guests[handle].pages == 3


# -- SNP_LAUNCH_FINISH ------------------------------------------------------------------------
def _sign(key: amd_ecdsa.PrivateKey, message: bytes) -> SnpSignature:
    r, s = amd_ecdsa.sign(key, message)
    return SnpSignature(int.from_bytes(r, "little"), int.from_bytes(s, "little"))


def _public(key: amd_ecdsa.PrivateKey) -> SnpPublicKey:
    return SnpPublicKey(*amd_ecdsa.public_key_coordinates(key.public_key()))


def _id(
    ld: bytes, policy: int = 0x30000, *, author: bool = True, bad: str = ""
) -> dict[str, bytes]:
    id_key, author_key = amd_ecdsa.generate_private_key(), amd_ecdsa.generate_private_key()
    block = IdBlock(ld, family_id=b"F" * 16, image_id=b"I" * 16, guest_svn=7, policy=policy)
    signature = _sign(id_key, block.to_bytes())
    if bad == "id":
        signature = SnpSignature(signature.r, signature.s ^ 1)
    if not author:
        alone = IdAuthInfo(signature, _public(id_key))
        return {"id_block": block.to_bytes(), "id_auth": alone.to_bytes()}
    author_signature = _sign(author_key, _public(id_key).to_bytes())
    if bad == "author":
        author_signature = SnpSignature(author_signature.r ^ 1, author_signature.s)
    auth = IdAuthInfo(signature, _public(id_key), author_signature, _public(author_key))
    return {"id_block": block.to_bytes(), "id_auth": auth.to_bytes()}


def test_launch_finish_refusals_name_what_is_wrong(platform: Platform) -> None:
    _, psp = platform
    handle, _, ld = _launched(platform)
    material = _id(ld)
    _refused(lambda: psp.snp_launch_finish(handle, host_data=bytes(31)), SevStatus.INVALID_PARAM,
             FINISH, "HOST_DATA is 32 bytes")
    for alone in ({"id_block": material["id_block"]}, {"id_auth": material["id_auth"]}):
        _refused(lambda: psp.snp_launch_finish(handle, **alone), SevStatus.INVALID_PARAM,  # noqa: B023
                 FINISH, "ID block and ID auth go together")
    block = bytearray(material["id_block"])
    block[0x50] = 2
    _refused(lambda: psp.snp_launch_finish(handle, id_block=bytes(block),
                                           id_auth=material["id_auth"]),
             SevStatus.INVALID_PARAM, FINISH, "ID_BLOCK: VERSION is 2, expected 1")
    _refused(lambda: psp.snp_launch_finish(handle, **_id(ld, bad="id")), SevStatus.BAD_SIGNATURE,
             FINISH, "ID block signature: ECDSA P-384 signature does not verify")
    _refused(lambda: psp.snp_launch_finish(handle, **_id(ld, bad="author")),
             SevStatus.BAD_SIGNATURE, FINISH,
             "ID key signature: ECDSA P-384 signature does not verify")
    other = bytes(range(48))
    _refused(lambda: psp.snp_launch_finish(handle, **_id(other)), SevStatus.BAD_MEASUREMENT,
             FINISH, f"ID block LD {other.hex()} differs from the launch digest {ld.hex()}")
    _refused(lambda: psp.snp_launch_finish(handle, **_id(ld, 0x30000 | 1 << 19)),
             SevStatus.POLICY_FAILURE, FINISH, "ID block policy differs")
    ctx = psp._guests[handle]
    assert ctx.family_id == bytes(16) and not ctx.author_key_en  # nothing recorded
    psp.snp_launch_finish(handle, **material)
    _refused(lambda: psp.snp_launch_finish(handle), SevStatus.INVALID_GUEST_STATE, FINISH,
             "guest is GSTATE_RUNNING")


def test_an_empty_launch_is_refused(platform: Platform) -> None:
    _, psp = platform
    handle = _start(platform)
    _refused(lambda: psp.snp_launch_finish(handle), SevStatus.INVALID_GUEST_STATE, FINISH,
             "nothing was launched")


def test_launch_finish_records_the_id_block_and_host_data(platform: Platform) -> None:
    _, psp = platform
    handle, _, ld = _launched(platform)
    material = _id(ld)
    auth = IdAuthInfo.from_bytes(material["id_auth"])
    assert psp.snp_launch_finish(handle, host_data=b"\x11" * 32, **material) == ld
    ctx = psp._guests[handle]
    assert (ctx.family_id, ctx.image_id, ctx.guest_svn) == (b"F" * 16, b"I" * 16, 7)
    assert auth.author_key is not None
    assert ctx.id_key_digest == auth.id_key.digest()
    assert ctx.author_key_digest == auth.author_key.digest() and ctx.author_key_en
    assert ctx.host_data == b"\x11" * 32


def test_an_id_block_without_an_author_key_records_no_author(platform: Platform) -> None:
    _, psp = platform
    handle, _, ld = _launched(platform)
    material = _id(ld, author=False)
    psp.snp_launch_finish(handle, **material)
    ctx = psp._guests[handle]
    assert ctx.id_key_digest == IdAuthInfo.from_bytes(material["id_auth"]).id_key.digest()
    assert ctx.author_key_digest == bytes(48) and not ctx.author_key_en


def test_a_guest_request_needs_a_running_guest(platform: Platform) -> None:
    _, psp = platform
    handle, _, _ = _launched(platform)
    _refused(lambda: psp.snp_guest_request(handle, bytes(PAGE)), SevStatus.INVALID_GUEST_STATE,
             "SNP_GUEST_REQUEST", "guest is GSTATE_LAUNCH")
    _refused(lambda: psp.snp_guest_request(handle + 1, bytes(PAGE)), SevStatus.INVALID_GUEST,
             "SNP_GUEST_REQUEST", f"no guest with handle {handle + 1}")


# -- SNP_DBG_DECRYPT --------------------------------------------------------------------------
def test_debug_decrypt_refusals(platform: Platform) -> None:
    hv, psp = platform
    command = "SNP_DBG_DECRYPT"
    _refused(lambda: psp.snp_dbg_decrypt(3, 0), SevStatus.INVALID_GUEST, command,
             "no guest with handle 3")
    private, spa, _ = _launched(platform)
    _refused(lambda: psp.snp_dbg_decrypt(private, spa), SevStatus.POLICY_FAILURE, command,
             "the guest policy forbids debugging")
    hv.machine.engine.activate(ASID + 1)
    debug = psp.snp_launch_start(ASID + 1, 0x30000 | 1 << 19)
    _refused(lambda: psp.snp_dbg_decrypt(debug, spa), SevStatus.INVALID_PAGE_OWNER, command,
             f"{spa:#x} is not this guest's")  # another guest's page
    shared = hv.allocate_page()
    _refused(lambda: psp.snp_dbg_decrypt(debug, shared + 8), SevStatus.INVALID_PAGE_OWNER,
             command, f"{shared + 8:#x} is not this guest's")  # the hypervisor's page


def test_debug_decrypt_returns_the_whole_page_an_address_falls_in(platform: Platform) -> None:
    _, psp = platform
    handle, spa, _ = _launched(platform, 0x30000 | 1 << 19)
    assert psp.snp_dbg_decrypt(handle, spa + 0x123) == CONTENTS
