"""A whole emulated boot: firmware -> (shim -> GRUB | UKI | GRUB) -> Linux EFI stub.

Each stage verifies what it starts and measures it into the PCR bank and the event log
(:mod:`cvm.guest.boot.firmware`, :mod:`.shim`, :mod:`.grub`, :mod:`.kernel`, :mod:`.uki`). The first
image is ``\\EFI\\BOOT\\BOOTX64.EFI`` (UEFI 2.10 section 3.5.1.1, removable media path); what it
is decides the path: a UKI (``.linux`` section), shim (``.vendor_cert``/``.sbatlevel``), or GRUB
(``mods``). A refusal anywhere raises PolicyError naming the image, the reason and the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cvm.errors import StateError
from cvm.formats.grub.core_image import GrubCoreImage
from cvm.formats.pe.image import PeImage
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import DEFAULT_LOADER, Firmware, FirmwareSettings, GptDisk
from cvm.guest.boot.grub import BootRequest, Grub
from cvm.guest.boot.kernel import StubOptions, measures_load_options, start_kernel
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import PcrBank, SoftwarePcrBank
from cvm.guest.boot.shim import Shim
from cvm.guest.boot.uki import measure_uki


@dataclass(frozen=True)
class BootResult:
    """The outcome of a boot: its event log, the kernel it started and the stages it ran."""

    log: EventLog
    request: BootRequest
    stages: tuple[str, ...]


def loader_kind(image: bytes | PeImage) -> str:
    """``uki``, ``shim``, ``grub`` or ``linux``: what kind of EFI application ``image`` is."""
    pe = image if isinstance(image, PeImage) else PeImage.parse(image)
    if pe.section(".linux") is not None:
        return "uki"
    if pe.section(".vendor_cert") is not None or pe.section(".sbatlevel") is not None:
        return "shim"
    if pe.section("mods") is not None:
        return "grub"
    return "linux"


@dataclass(frozen=True)
class BootChain:
    """The inputs of a boot: ESP files, varstore, the disk's GPT, the platform's settings."""

    esp: EspFiles
    varstore: Varstore
    disk: GptDisk | None = None
    settings: FirmwareSettings = field(default_factory=FirmwareSettings)
    loader: str = DEFAULT_LOADER
    stub: StubOptions = field(default_factory=StubOptions)

    def run(self, pcrs: PcrBank | None = None,
            sink: Callable[[EventLog], None] | None = None) -> BootResult:
        """Boot once, measuring into ``pcrs`` (a fresh software bank by default); ``sink``
        receives the event log after each event (the firmware's log area)."""
        bank = pcrs if pcrs is not None else SoftwarePcrBank()
        boot = MeasuredBoot(bank, sink=sink)
        firmware = Firmware(boot, self.varstore, self.esp, self.disk, self.settings)
        firmware.power_on()
        first = firmware.boot_pe(self.loader)
        kind = loader_kind(first)
        stages = ["firmware", kind]
        if kind == "uki":
            contents = measure_uki(boot, first)
            request = BootRequest(contents.kernel, self.loader, contents.cmdline, contents.initrd)
            options = StubOptions(initrd_via_load_file2=True, measure_load_options=(
                self.stub.measure_load_options or measures_load_options(contents.kernel)))
        elif kind in ("shim", "grub"):
            shim = None
            grub_image: bytes | PeImage = first
            grub_path = self.loader
            if kind == "shim":
                shim = Shim(firmware, first.data, self.loader)
                shim.start()
                grub_image = shim.load_second_stage()
                grub_path = shim.second_stage_path()
                stages.append("grub")
            partition = self.disk.partition_number if self.disk is not None else 1
            grub = Grub(boot, self.esp, GrubCoreImage.parse(grub_image), grub_path, shim,
                        partition, firmware)
            request = grub.run()
            options = self.stub
        else:
            raise StateError(f"{self.loader}: a bare kernel as the first image is not modelled")
        stages.append("linux")
        start_kernel(firmware, request.cmdline, request.initrd, options)
        return BootResult(boot.log, request, tuple(stages))
