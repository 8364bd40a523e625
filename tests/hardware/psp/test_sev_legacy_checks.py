"""The SEV / SEV-ES launch commands (AMD 55766): each refusal with its status and message, the
state each command needs, the handles, the TIK and MNONCE the PSP draws, and the MAC's bytes."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

import pytest
from tests.hardware.psp.refusals import refused as _refused

from cvm.amd.kds import ChipFuses
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.psp.sev_legacy import LegacyFirmware, enables_es, measure_mac
from cvm.hardware.psp.status import SevStatus
from cvm.host.vmm import Hypervisor

Platform = tuple[Hypervisor, SecureProcessor]
TIK = bytes(range(16))
NONCE = bytes(range(100, 116))
ASID = 3


def _legacy(platform: Platform) -> LegacyFirmware:
    hv, psp = platform
    for asid in (ASID, ASID + 1, ASID + 2):
        hv.machine.engine.activate(asid)
    return LegacyFirmware(psp)


def test_the_mac_covers_the_policy_little_endian() -> None:
    """MEASURE = HMAC-SHA-256(TIK, 04 || API major || minor || build || POLICY (LE) || LD ||
    MNONCE), written out byte by byte for a policy whose four bytes all differ."""
    ld = hashlib.sha256(b"launched").digest()
    policy = 0x3701_0005  # NODBG, ES, API 1.55
    message = bytes([0x04, 1, 55, 24]) + bytes([0x05, 0x00, 0x01, 0x37]) + ld + NONCE
    expected = hmac.new(TIK, message, hashlib.sha256).digest()
    assert measure_mac(TIK, (1, 55), 24, policy, ld, NONCE) == expected


@pytest.mark.parametrize(
    ("policy", "es"), [(0x0, False), (0x1, False), (0x4, True), (0x5, True), (0x3B, False)]
)
def test_es_is_policy_bit_2(policy: int, es: bool) -> None:
    assert enables_es(policy) is es


@pytest.mark.parametrize(
    ("policy", "status", "reason"),
    [
        (1 << 6, SevStatus.INVALID_PARAM, "policy 0x40 sets reserved bits"),
        (1 << 15, SevStatus.INVALID_PARAM, "policy 0x8000 sets reserved bits"),
        (1 << 32, SevStatus.INVALID_PARAM, "policy 0x100000000 sets reserved bits"),
        (-1, SevStatus.INVALID_PARAM, "policy -0x1 sets reserved bits"),
        (0x3801_0000, SevStatus.POLICY_FAILURE, "policy needs a newer API version"),  # 1.56
        (0x0002_0000, SevStatus.POLICY_FAILURE, "policy needs a newer API version"),  # 2.0
    ],
)
def test_launch_start_refuses_reserved_bits_and_a_newer_api(
    platform: Platform, policy: int, status: SevStatus, reason: str
) -> None:
    legacy = _legacy(platform)
    _refused(lambda: legacy.launch_start(ASID, policy, TIK), status, "LAUNCH_START", reason)


def test_launch_start_takes_every_known_bit_up_to_the_firmware_api(platform: Platform) -> None:
    """API 1.55 is the firmware's own (1.55.24); 0.255 and a zero policy are older."""
    legacy = _legacy(platform)
    for asid, policy in zip((3, 4, 5), (0x3701_003F, 0xFF00_0000, 0), strict=True):
        legacy.launch_start(asid, policy, TIK)


def test_launch_start_refusals_of_asid_and_tik(platform: Platform) -> None:
    legacy = _legacy(platform)
    command = "LAUNCH_START"
    _refused(lambda: legacy.launch_start(9, 1, TIK), SevStatus.INVALID_ASID, command,
             "ASID 9 has no key")
    _refused(lambda: legacy.launch_start(ASID, 1, bytes(15)), SevStatus.INVALID_PARAM, command,
             "the TIK is 16 bytes")
    legacy.launch_start(ASID, 1, TIK)
    _refused(lambda: legacy.launch_start(ASID, 1, TIK), SevStatus.ASID_OWNED, command,
             f"ASID {ASID} already has a guest")
    legacy.launch_start(ASID + 1, 1, TIK)  # another ASID is free


def test_handles_count_from_0x1000_and_decommission_forgets_one(platform: Platform) -> None:
    legacy = _legacy(platform)
    first, second = legacy.launch_start(ASID, 1, TIK), legacy.launch_start(ASID + 1, 1, TIK)
    assert (first, second) == (0x1000, 0x1001)
    legacy.decommission(first)
    _refused(lambda: legacy.decommission(first), SevStatus.INVALID_GUEST, "DECOMMISSION",
             "no guest 0x1000")
    _refused(lambda: legacy.launch_measure(first), SevStatus.INVALID_GUEST, "LAUNCH_MEASURE",
             "no guest with handle 0x1000")
    legacy.launch_measure(second, NONCE)
    legacy.launch_start(ASID, 1, TIK)  # the ASID is free again


def test_the_psp_draws_the_tik_and_the_mnonce_when_none_is_given(
    platform: Platform, chip: ChipFuses
) -> None:
    hv, _ = platform
    draws: Iterator[int] = iter(range(1, 256))
    psp = SecureProcessor(hv.machine, chip, random_bytes=lambda n: bytes([next(draws)]) * n)
    hv.machine.engine.activate(ASID)
    legacy = LegacyFirmware(psp)
    handle = legacy.launch_start(ASID, 1)
    measure = legacy.launch_measure(handle)
    empty = hashlib.sha256().digest()
    assert measure[32:] == bytes([2]) * 16
    assert measure[:32] == measure_mac(bytes([1]) * 16, (1, 55), 24, 1, empty, bytes([2]) * 16)


def test_launch_update_data_refusals(platform: Platform) -> None:
    hv, _ = platform
    legacy = _legacy(platform)
    handle = legacy.launch_start(ASID, 1, TIK)
    spa = hv.allocate_page()
    command = "LAUNCH_UPDATE_DATA"
    for where, length in ((spa + 8, 16), (spa, 8), (spa, 0), (spa, -16), (spa, 24)):
        _refused(lambda: legacy.launch_update_data(handle, where, length),  # noqa: B023
                 SevStatus.INVALID_LENGTH, command, "region must be 16-byte aligned")
    size = hv.machine.dram.size_bytes
    _refused(lambda: legacy.launch_update_data(handle, size - 16, 32), SevStatus.INVALID_ADDRESS,
             command, f"system physical address {size - 16:#x}+0x20 is outside DRAM (0..{size:#x})")
    legacy.launch_update_data(handle, spa, 16)
    legacy.launch_measure(handle, NONCE)
    _refused(lambda: legacy.launch_update_data(handle, spa, 16), SevStatus.INVALID_GUEST_STATE,
             command, "guest is LSECRET")
    _refused(lambda: legacy.launch_update_data(handle + 1, spa, 16), SevStatus.INVALID_GUEST,
             command, f"no guest with handle {handle + 1:#x}")


def test_launch_update_vmsa_refusals(platform: Platform) -> None:
    hv, _ = platform
    legacy = _legacy(platform)
    sev = legacy.launch_start(ASID, 0x1, TIK)
    es = legacy.launch_start(ASID + 1, 0x5, TIK)
    spa = hv.allocate_page()
    command = "LAUNCH_UPDATE_VMSA"
    _refused(lambda: legacy.launch_update_vmsa(sev, spa), SevStatus.POLICY_FAILURE, command,
             "the policy does not enable SEV-ES")
    _refused(lambda: legacy.launch_update_vmsa(es, spa + 16), SevStatus.INVALID_ADDRESS, command,
             f"address {spa + 16:#x} is not page-aligned")
    legacy.launch_update_vmsa(es, spa)
    legacy.launch_measure(es, NONCE)
    _refused(lambda: legacy.launch_update_vmsa(es, spa), SevStatus.INVALID_GUEST_STATE, command,
             "guest is LSECRET")


def test_launch_measure_and_finish_follow_the_states(platform: Platform) -> None:
    legacy = _legacy(platform)
    handle = legacy.launch_start(ASID, 1, TIK)
    _refused(lambda: legacy.launch_finish(handle), SevStatus.INVALID_GUEST_STATE, "LAUNCH_FINISH",
             "guest is LUPDATE")
    _refused(lambda: legacy.launch_measure(handle, bytes(15)), SevStatus.INVALID_PARAM,
             "LAUNCH_MEASURE", "MNONCE is 16 bytes")
    measure = legacy.launch_measure(handle, NONCE)
    assert measure[32:] == NONCE
    assert measure[:32] == measure_mac(TIK, (1, 55), 24, 1, hashlib.sha256().digest(), NONCE)
    _refused(lambda: legacy.launch_measure(handle, NONCE), SevStatus.INVALID_GUEST_STATE,
             "LAUNCH_MEASURE", "guest is LSECRET")
    legacy.launch_finish(handle)
    _refused(lambda: legacy.launch_finish(handle), SevStatus.INVALID_GUEST_STATE, "LAUNCH_FINISH",
             "guest is RUNNING")
