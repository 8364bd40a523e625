"""Reference values built by hand (no image build): every section filled, values that differ
from the defaults, so a test can tell each field from its neighbour."""

from __future__ import annotations

import os
from dataclasses import replace

from cvm.formats.tcg.event_type import EventType
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image.reference_values import (
    ImageReferenceValues,
    LaunchReference,
    SnpClaims,
    StageReference,
    TokenReference,
)

MILAN = 0x00A00F11
APP = EventType.EV_EFI_BOOT_SERVICES_APPLICATION
# Authenticode digests (sha1, sha256) of the images the log says were loaded in PCR 4.
LOADER = (b"\x11" * 20, b"\x12" * 32)
KERNEL = (b"\x21" * 20, b"\x02" * 32)
DRIVER = (b"\x31" * 20, b"\x32" * 32)  # an application event in PCR 2, not a boot image


def event_log() -> bytes:
    """A crypto-agile log: two boot images in PCR 4 (the kernel twice, as shim loads it), a
    driver in PCR 2, a Secure Boot variable in PCR 7 and the separators."""
    boot = MeasuredBoot(SoftwarePcrBank(("sha1", "sha256")))
    boot.measure(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, b"SecureBoot\x01")
    boot.measure_digests(2, APP, b"driver", {"sha1": DRIVER[0], "sha256": DRIVER[1]})
    for pcr in range(8):
        boot.measure_separator(pcr)
    for name, (sha1, sha256) in (("kernel", KERNEL), ("loader", LOADER), ("kernel", KERNEL)):
        boot.measure_digests(4, APP, name.encode(), {"sha1": sha1, "sha256": sha256})
    boot.measure(4, EventType.EV_EFI_ACTION, b"not an image")
    return boot.log.to_bytes()


def sample(**changes: object) -> ImageReferenceValues:
    reference = ImageReferenceValues(
        chain="uki",
        launch=(
            LaunchReference("sev", 2, "EPYC-Milan", MILAN, False, b"\xa1" * 32),
            LaunchReference("sev-es", 2, "EPYC-Milan", MILAN, False, b"\xa2" * 32),
            LaunchReference("sev-snp", 2, "EPYC-Milan", MILAN, True, b"\xa3" * 48),
            LaunchReference("sev-snp", 4, "EPYC-Milan", MILAN, True, b"\xa4" * 48),
        ),
        snp=SnpClaims(vmpl=2, guest_policy=0x30000, allow_debug=False,
                      allow_migration_agent=True),
        pcrs={"sha1": {0: b"\x01" * 20}, "sha256": {pcr: bytes([pcr + 0x40]) * 32
                                                  for pcr in (0, 4, 7, 11, 14, 23)}},
        event_log=event_log(),
        stages=(StageReference("uki", "EFI/BOOT/BOOTX64.EFI", b"\x51" * 32, b"\x52" * 32, "db"),
                StageReference("initrd", "", b"\x53" * 32, None, None)),
        sealing=(TokenReference(0, 1, "pcrs", (4, 7, 11), (), b"\x61" * 32),
                 TokenReference(1, 2, "signed", (7,), (11,), b"\x62" * 32)),
    )
    return replace(reference, **changes)  # type: ignore[arg-type]


class Recording:
    """os.urandom that keeps what it gave."""

    def __init__(self) -> None:
        self.drawn: list[bytes] = []

    def __call__(self, size: int) -> bytes:
        self.drawn.append(os.urandom(size))
        return self.drawn[-1]
