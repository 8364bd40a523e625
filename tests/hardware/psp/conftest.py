"""Fixtures for the emulated PSP: a machine with a chip, a synthetic OVMF, a launched guest and
the guest side of the SNP_GUEST_REQUEST channel
(:class:`cvm.guest.kernel.guest_request.GuestRequester`, the guest's sev-guest driver).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cvm.amd.kds import ChipFuses
from cvm.formats.ovmf.image import build_image
from cvm.formats.ovmf.sev_area import SevArea
from cvm.formats.ovmf.sev_metadata import MetadataSection
from cvm.guest.kernel.guest_request import GuestRequester
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.launch import GuestRequestRelay, SnpLaunch, SnpLaunchConfig, launch_snp
from cvm.host.vmm import Hypervisor


@pytest.fixture
def firmware(amdsev_sections: tuple[MetadataSection, ...]) -> bytes:
    """A synthetic AmdSev-style OVMF (256 KiB) with kernel-hashes support."""
    return build_image(
        0x40000, sections=amdsev_sections, sev_hash_table=SevArea(0x810C00, 0x400),
        seed=b"psp tests",
    )


@pytest.fixture
def chip() -> ChipFuses:
    return ChipFuses("Milan", bytes(range(64)), b"\x5a" * 64)


@pytest.fixture
def platform(chip: ChipFuses) -> tuple[Hypervisor, SecureProcessor]:
    machine = Machine(8 << 30)
    return Hypervisor(machine), SecureProcessor(machine, chip)


@pytest.fixture
def launch(
    platform: tuple[Hypervisor, SecureProcessor], firmware: bytes
) -> Callable[..., tuple[SnpLaunch, GuestRequestRelay]]:
    """``launch(**config)`` launches ``firmware`` and returns (launch, relay)."""
    hv, psp = platform

    def run(**config: Any) -> tuple[SnpLaunch, GuestRequestRelay]:
        relay = GuestRequestRelay(psp)
        return launch_snp(hv, psp, firmware, SnpLaunchConfig(**config), relay), relay

    return run


@pytest.fixture
def requester() -> Callable[..., GuestRequester]:
    """``requester(launch)`` starts vCPU 0 and returns the guest's request driver."""

    def start(launched: SnpLaunch, vmpck: int = 0) -> GuestRequester:
        vcpu = launched.guest.vcpus[0]
        vcpu.vmrun()
        assert launched.secrets_gpa is not None
        return GuestRequester.start(vcpu, launched.secrets_gpa, vmpck)

    return start
