"""The Linux EFI stub: what the kernel measures before it leaves the firmware.

Linux ``drivers/firmware/efi/libstub/efi-stub-helper.c`` (``efi_measure_tagged_event``) and
``efistub.h``: when the initrd reaches the stub through the LINUX_EFI_INITRD_MEDIA_GUID LoadFile2
protocol (systemd-stub, GRUB 2.12) the stub measures it into PCR 9 as EV_EVENT_TAG with
taggedEventID 0x8F3B22EC and data ``"Linux initrd\\0"``, digest H(initrd); kernels from about
6.1 also measure the LoadOptions (UTF-16 command line) with ID 0x8F3B22ED,
``"LOADED_IMAGE::LoadOptions\\0"``. An initrd handed over in boot_params (GRUB 2.06's linuxefi,
Debian bookworm) is not measured by the stub. The stub then calls ExitBootServices, which the
firmware measures into PCR 5.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.tagged_event import (
    LINUX_INITRD_EVENT_TAG_ID,
    LINUX_LOAD_OPTIONS_EVENT_TAG_ID,
    TaggedEvent,
)
from cvm.guest.boot.firmware import Firmware

STUB_PCR = 9
INITRD_EVENT = TaggedEvent(LINUX_INITRD_EVENT_TAG_ID, b"Linux initrd\0")
LOAD_OPTIONS_EVENT = TaggedEvent(LINUX_LOAD_OPTIONS_EVENT_TAG_ID, b"LOADED_IMAGE::LoadOptions\0")


def measures_load_options(kernel: bytes) -> bool:
    """Whether this kernel's EFI stub measures its LoadOptions when it is started by LoadImage.

    The stub logs the event with the text ``LOADED_IMAGE::LoadOptions``, which lies in the
    uncompressed stub of every kernel that measures it and in no other: the kernel's own bytes
    decide, not a guess from its version.
    """
    return LOAD_OPTIONS_EVENT.data.rstrip(b"\0") in kernel


@dataclass(frozen=True)
class StubOptions:
    """How the kernel was started: which of its inputs the stub itself measures."""

    initrd_via_load_file2: bool = False
    measure_load_options: bool = False


def start_kernel(
    firmware: Firmware, cmdline: str, initrd: bytes, options: StubOptions | None = None
) -> None:
    """The stub's measurements, then ExitBootServices (the end of the firmware's log)."""
    chosen = options or StubOptions()
    boot = firmware.boot
    if chosen.measure_load_options:
        boot.measure(STUB_PCR, EventType.EV_EVENT_TAG, LOAD_OPTIONS_EVENT.to_bytes(),
                     hashed=(cmdline + "\0").encode("utf-16-le"))
    if chosen.initrd_via_load_file2 and initrd:
        boot.measure(STUB_PCR, EventType.EV_EVENT_TAG, INITRD_EVENT.to_bytes(), hashed=initrd)
    firmware.exit_boot_services()
