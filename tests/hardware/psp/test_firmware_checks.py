"""The PSP firmware's identity, TCB commands and SNP_LAUNCH_START: every refusal with its status
and its message (the host prints it on stderr), the defaults a PSP starts from, and the guest
context a launch creates (handles, VMPCKs, GOSVW)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from tests.hardware.psp.refusals import refused as _refused

from cvm.amd.kds import ChipFuses
from cvm.amd.product import PRODUCTS, Product
from cvm.errors import UsageError
from cvm.formats.snp.page_info import PageType
from cvm.formats.snp.platform_info import PlatformInfo
from cvm.formats.snp.secrets_page import SecretsPage
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import FirmwareVersion, SecureProcessor, _cpuid_signature
from cvm.hardware.psp.status import SevStatus
from cvm.host.vmm import Hypervisor

Platform = tuple[Hypervisor, SecureProcessor]
ASID = 5
PAGE = 0x1000


def _counter() -> Callable[[int], bytes]:
    """A random source that hands out 1s, then 2s, ... (one byte value per draw)."""
    draws: Iterator[int] = iter(range(1, 256))

    def random_bytes(size: int) -> bytes:
        return bytes([next(draws)]) * size

    return random_bytes


# -- identity and defaults ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("product", "signature"),
    [
        (PRODUCTS["Milan"], 0x00A00F10),
        (PRODUCTS["Genoa"], 0x00A10F10),
        (PRODUCTS["Turin"], 0x00B00F20),
        (Product("Rome", "Rome", 0x17, 0x31, 0x0, TcbLayout.MILAN_GENOA), 0x00830F10),
        (Product("family 0x10", "x", 0x10, 0x02, 0x3, TcbLayout.MILAN_GENOA), 0x00100F23),
        (Product("family 0xF", "x", 0x0F, 0x41, 0x2, TcbLayout.MILAN_GENOA), 0x00040F12),
        (Product("model 0xA1", "x", 0x19, 0xA1, 0x2, TcbLayout.MILAN_GENOA), 0x00AA0F12),
        (Product("family 0x6", "x", 0x06, 0x08, 0x1, TcbLayout.MILAN_GENOA), 0x00000681),
    ],
)
def test_the_signature_is_cpuid_1_eax_of_the_product(product: Product, signature: int) -> None:
    """AMD 25481 Fn0000_0001_EAX: extended family (family - 0xF, only above 0xF) in 27:20,
    extended model (model 7:4) in 19:16, base family (at most 0xF) in 11:8, model 3:0 in 7:4,
    stepping in 3:0."""
    assert _cpuid_signature(product) == signature


def test_a_new_psp_starts_from_its_default_tcb_version_and_platform(chip: ChipFuses) -> None:
    psp = SecureProcessor(Machine(1 << 30), chip)
    default = TcbVersion(boot_loader=4, tee=0, snp=22, microcode=213, layout=TcbLayout.MILAN_GENOA)
    assert psp.current_tcb == psp.committed_tcb == psp.reported_tcb == default
    assert psp.version == psp.committed_version == FirmwareVersion(1, 55, 24)
    assert psp.platform_info == PlatformInfo(smt_en=True, ecc_en=True, alias_check_complete=True)
    assert psp.signature == 0x00A00F10 and psp.chip_id == chip.chip_id


def test_a_tcb_of_another_layout_is_refused_at_power_on(chip: ChipFuses) -> None:
    turin = TcbVersion(boot_loader=1, tee=0, snp=1, microcode=1, fmc=0, layout=TcbLayout.TURIN)
    with pytest.raises(UsageError, match=r"^a Milan TCB uses the MILAN_GENOA layout$"):
        SecureProcessor(Machine(1 << 30), chip, tcb=turin)


# -- the TCB: download, commit, config, a reflash ----------------------------------------------
def _bumped(tcb: TcbVersion, snp: int) -> TcbVersion:
    return TcbVersion(tcb.boot_loader, tcb.tee, tcb.snp + snp, tcb.microcode)


def test_download_firmware_refuses_another_layout_and_a_rollback(platform: Platform) -> None:
    _, psp = platform
    old = psp.current_tcb
    turin = TcbVersion(boot_loader=9, tee=9, snp=99, microcode=250, fmc=0, layout=TcbLayout.TURIN)
    command = "SNP_DOWNLOAD_FIRMWARE_EX"
    _refused(lambda: psp.download_firmware(turin, FirmwareVersion()),
             SevStatus.INVALID_PARAM, command, "wrong TCB layout")
    assert psp.current_tcb == old
    new = _bumped(old, 2)
    psp.download_firmware(new, FirmwareVersion(1, 57, 3))
    psp.commit()
    assert psp.committed_tcb == new and psp.committed_version == FirmwareVersion(1, 57, 3)
    _refused(lambda: psp.download_firmware(old, FirmwareVersion()), SevStatus.BAD_SVN, command,
             f"TCB {old} is below the committed TCB {new}")
    assert psp.current_tcb == new and psp.version == FirmwareVersion(1, 57, 3)


def test_a_downgrade_below_the_reported_tcb_drops_it_and_one_above_keeps_it(
    platform: Platform,
) -> None:
    _, psp = platform
    base = psp.current_tcb
    psp.download_firmware(_bumped(base, 4), FirmwareVersion())
    psp.config(_bumped(base, 2))
    psp.download_firmware(_bumped(base, 3), FirmwareVersion())  # still at least the reported
    assert psp.reported_tcb == _bumped(base, 2)
    psp.download_firmware(_bumped(base, 1), FirmwareVersion())  # now below it
    assert psp.reported_tcb == _bumped(base, 1) == psp.current_tcb
    psp.download_firmware(_bumped(base, 5), FirmwareVersion())  # it follows the current again
    assert psp.reported_tcb == _bumped(base, 5)


def test_config_sets_the_reported_tcb_never_above_the_current(platform: Platform) -> None:
    _, psp = platform
    current = psp.current_tcb
    _refused(lambda: psp.config(_bumped(current, 1)), SevStatus.INVALID_PARAM, "SNP_CONFIG",
             "REPORTED_TCB above current TCB")
    assert psp.reported_tcb == current
    lower = _bumped(current, -1)
    psp.config(lower)
    assert psp.reported_tcb == lower
    psp.config(None)
    assert psp.reported_tcb == current


def test_booting_another_image_resets_the_tcb_and_forgets_every_guest(platform: Platform) -> None:
    hv, psp = platform
    hv.machine.engine.activate(ASID)
    handle = psp.snp_launch_start(ASID, 0x30000)
    psp.config(_bumped(psp.current_tcb, -1))
    old = _bumped(psp.current_tcb, -3)
    psp.boot_firmware(old, FirmwareVersion(1, 52, 4))
    assert psp.current_tcb == psp.committed_tcb == psp.reported_tcb == old
    assert psp.version == psp.committed_version == FirmwareVersion(1, 52, 4)
    _refused(lambda: psp.guest_measurement(handle), SevStatus.INVALID_GUEST, "SNP_GUEST_STATUS",
             f"no guest {handle}")
    turin = TcbVersion(boot_loader=1, tee=0, snp=1, microcode=1, fmc=0, layout=TcbLayout.TURIN)
    with pytest.raises(UsageError, match=r"^a Milan TCB uses the TURIN layout$"):
        psp.boot_firmware(turin, FirmwareVersion())
    assert psp.current_tcb == old


# -- SNP_LAUNCH_START ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("policy", "kwargs", "status", "reason"),
    [
        (0x10000, {}, SevStatus.INVALID_PARAM,
         "guest policy 0x10000: reserved bit 17 must be one"),
        (0x30000 | 1 << 40, {}, SevStatus.INVALID_PARAM,
         "guest policy 0x10000030000: reserved bits 0x10000000000 are set"),
        (0x30000 | 1 << 18, {"migration_agent": True}, SevStatus.POLICY_FAILURE,
         "no migration agent support"),
        (0x20000, {}, SevStatus.POLICY_FAILURE, "SMT is enabled but the policy forbids it"),
        (0x30000 | 0x0138, {}, SevStatus.POLICY_FAILURE, "policy needs ABI 1.56, firmware is 1.55"),
        (0x30000 | 0x0200, {}, SevStatus.POLICY_FAILURE, "policy needs ABI 2.0, firmware is 1.55"),
        (0x30000 | 1 << 22, {}, SevStatus.POLICY_FAILURE,
         "the memory encryption engine is AES-128"),
        (0x30000 | 1 << 23, {}, SevStatus.POLICY_FAILURE, "RAPL is not disabled"),
        (0x30000 | 1 << 24, {}, SevStatus.POLICY_FAILURE, "ciphertext hiding is not enabled"),
        (0x30000, {"gosvw": bytes(15)}, SevStatus.INVALID_PARAM, "GOSVW is 16 bytes"),
        (0x30000, {"gosvw": bytes(17)}, SevStatus.INVALID_PARAM, "GOSVW is 16 bytes"),
    ],
)
def test_launch_start_refusals_name_what_is_wrong(
    platform: Platform, policy: int, kwargs: dict[str, object], status: SevStatus, reason: str
) -> None:
    hv, psp = platform
    hv.machine.engine.activate(ASID)
    _refused(lambda: psp.snp_launch_start(ASID, policy, **kwargs),  # type: ignore[arg-type]
             status, "SNP_LAUNCH_START", reason)
    assert psp._guests == {}


def test_launch_start_refuses_a_second_socket_and_an_asid_without_a_key_or_owner(
    platform: Platform, chip: ChipFuses
) -> None:
    hv, psp = platform
    command = "SNP_LAUNCH_START"
    _refused(lambda: psp.snp_launch_start(9, 0x30000), SevStatus.INVALID_ASID, command,
             "ASID 9 has no key")
    hv.machine.engine.activate(9)
    psp.snp_launch_start(9, 0x30000)
    _refused(lambda: psp.snp_launch_start(9, 0x30000), SevStatus.ASID_OWNED, command,
             "ASID 9 already has a guest")
    two = SecureProcessor(hv.machine, chip, sockets=2)
    _refused(lambda: two.snp_launch_start(9, 0x30000 | 1 << 20), SevStatus.POLICY_FAILURE,
             command, "the platform has more than one socket")


def test_launch_start_takes_what_the_platform_can_honour(
    platform: Platform, chip: ChipFuses
) -> None:
    """MIGRATE_MA only allows an agent; ABI 1.55 is the firmware's own; a platform that
    disables RAPL, hides ciphertext and has SMT off takes the policies that ask for it."""
    hv, psp = platform
    for asid, policy in enumerate((0x30000 | 1 << 18, 0x30000 | 0x0137, 0x30000 | 0x0036), 1):
        hv.machine.engine.activate(asid)
        psp.snp_launch_start(asid, policy)
    strict = SecureProcessor(
        hv.machine, chip,
        platform_info=PlatformInfo(rapl_dis=True, ciphertext_hiding_dram_en=True),
    )
    hv.machine.engine.activate(7)
    strict.snp_launch_start(7, 0x20000 | 1 << 23 | 1 << 24)  # SMT not allowed, none on


def test_each_launch_gets_the_next_handle_and_its_own_keys(
    platform: Platform, chip: ChipFuses
) -> None:
    """Handles count from 1; VMPCK0..3 are the PSP's first four random draws in order and
    REPORT_ID the fifth; the SECRETS page carries the VMPCKs, the signature and the GOSVW."""
    hv, _ = platform
    psp = SecureProcessor(hv.machine, chip, random_bytes=_counter())
    gosvw = bytes(range(16))
    handles = []
    for asid in (3, 4):
        hv.machine.engine.activate(asid)
        handles.append(psp.snp_launch_start(asid, 0x30000, gosvw=gosvw))
    assert handles == [1, 2]
    ctx = psp._guests[1]
    assert ctx.vmpcks == tuple(bytes([n]) * 32 for n in (1, 2, 3, 4))
    assert ctx.report_id == bytes([5]) * 32
    assert psp._guests[2].vmpcks[0] == bytes([6]) * 32
    spa = hv.allocate_page()
    hv.machine.rmp.rmpupdate(spa, assigned=True, asid=3, gpa=0x7000)
    psp.snp_launch_update(1, spa, PageType.SECRETS)
    secrets = SecretsPage.from_bytes(hv.machine.engine.read(3, spa, PAGE))
    assert secrets.vmpcks == ctx.vmpcks
    assert secrets.fms == psp.signature == 0x00A00F10
    assert secrets.gosvw == gosvw


def test_decommission_forgets_the_guest_once(platform: Platform) -> None:
    hv, psp = platform
    hv.machine.engine.activate(ASID)
    hv.machine.engine.activate(ASID + 1)
    first = psp.snp_launch_start(ASID, 0x30000)
    second = psp.snp_launch_start(ASID + 1, 0x30000)
    psp.snp_decommission(first)
    _refused(lambda: psp.snp_decommission(first), SevStatus.INVALID_GUEST, "SNP_DECOMMISSION",
             f"no guest {first}")
    _refused(lambda: psp.snp_launch_update(first, 0, PageType.ZERO), SevStatus.INVALID_GUEST,
             "SNP_LAUNCH_UPDATE", f"no guest with handle {first}")
    assert psp._guests.keys() == {second}
    psp.snp_launch_start(ASID, 0x30000)  # the ASID is free again
