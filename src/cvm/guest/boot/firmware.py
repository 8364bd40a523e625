"""The firmware stage: what OVMF measures (PCR 0-7) and how it loads the first boot image.

TCG PC Client PFP 1.05 r23 section 3.3.4 (PCR usage) as edk2 implements it
(``SecurityPkg/Tcg/Tcg2Dxe/Tcg2Dxe.c`` ``OnReadyToBoot``/``OnExitBootServices``,
``SecurityPkg/Library/DxeTpm2MeasureBootLib`` for the GPT and images,
``DxeImageVerificationLib`` for EV_EFI_VARIABLE_AUTHORITY):

* PCR 0: EV_S_CRTM_VERSION (UTF-16 version string) and the firmware volumes
  (EV_EFI_PLATFORM_FIRMWARE_BLOB, digest of the volume);
* PCR 7: SecureBoot, PK, KEK, db, dbx (and dbt, dbr when present) as
  EV_EFI_VARIABLE_DRIVER_CONFIG, then a separator;
* PCR 1: BootOrder and each Boot#### it names (EV_EFI_VARIABLE_BOOT) at the first ReadyToBoot;
* PCR 4: "Calling EFI Application from Boot Option" and the separators of PCR 0-6 at the first
  ReadyToBoot; "Returning from ..." and "Calling ..." again on every later attempt;
* loading an image: Secure Boot verification (db/dbx), the db entry that allowed it as
  EV_EFI_VARIABLE_AUTHORITY in PCR 7 (once per distinct entry), the disk's GPT in PCR 5 (once),
  then the image's Authenticode hash as EV_EFI_BOOT_SERVICES_APPLICATION in PCR 4;
* PCR 5: "Exit Boot Services Invocation" / "... Returned with Success".

PCR 0-3 and 6 depend on the firmware build and the VM's devices; cvm measures what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, PolicyError
from cvm.formats.gpt.header import HEADER_LAYOUT as GPT_HEADER_LAYOUT
from cvm.formats.gpt.partition_entry import LAYOUT as ENTRY_LAYOUT
from cvm.formats.pe.image import PeImage
from cvm.formats.tcg.device_path import ACPI, END_NODE, HARDWARE, MEDIA, DevicePath, DevicePathNode
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.firmware_blob import FirmwareBlob
from cvm.formats.tcg.gpt_data import UefiGptData
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.formats.uefi.guids import EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE
from cvm.formats.uefi.signature_list import SignatureDatabase
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.secureboot import Decision, verify_image
from cvm.wire import Guid

SECTOR_SIZE = 512
CALLING = "Calling EFI Application from Boot Option"
RETURNING = "Returning from EFI Application from Boot Option"
EXIT_BOOT_SERVICES = "Exit Boot Services Invocation"
EXIT_BOOT_SERVICES_OK = "Exit Boot Services Returned with Success"
DEFAULT_LOADER = r"\EFI\BOOT\BOOTX64.EFI"
SECURE_BOOT_POLICY = (
    ("PK", EFI_GLOBAL_VARIABLE), ("KEK", EFI_GLOBAL_VARIABLE),
    ("db", EFI_IMAGE_SECURITY_DATABASE), ("dbx", EFI_IMAGE_SECURITY_DATABASE),
)
# Measured after dbx only when they exist (edk2 Tcg2Dxe ``MeasureAllSecureVariables``).
OPTIONAL_POLICY = (("dbt", EFI_IMAGE_SECURITY_DATABASE), ("dbr", EFI_IMAGE_SECURITY_DATABASE))
# PciRoot(0x0)/Pci(0x2,0x0): where QEMU's q35 machine puts the first virtio disk.
VIRTIO_DISK_PATH = (
    DevicePathNode(ACPI, 0x01, bytes.fromhex("d041030a00000000")),
    DevicePathNode(HARDWARE, 0x01, bytes([0x00, 0x02])),
)
IMAGE_TOP_ADDRESS = 0x3D000000
PAGE_SIZE = 0x1000


def variable_data(varstore: Varstore, name: str, vendor: Guid) -> bytes:
    """The data of a variable, empty when it does not exist (as edk2 measures absent ones)."""
    found = varstore.get(name, vendor)
    return b"" if found is None else found.data


def secure_boot_enabled(varstore: Varstore) -> bool:
    """SecureBoot = 1: a PK is enrolled and SecureBootEnable is not 0 (edk2 AuthVariableLib)."""
    enable = varstore.get("SecureBootEnable")
    return bool(variable_data(varstore, "PK", EFI_GLOBAL_VARIABLE)) and (
        enable is None or enable.data != b"\0"
    )


def policy_variables(varstore: Varstore) -> tuple[tuple[str, Guid], ...]:
    """The Secure Boot variables measured into PCR 7, in order (dbt, dbr only if present)."""
    present = tuple(item for item in OPTIONAL_POLICY if varstore.get(*item) is not None)
    return SECURE_BOOT_POLICY + present


def security_database(varstore: Varstore, name: str) -> SignatureDatabase:
    """db, dbx (or dbt) as a signature database; empty when the variable is absent."""
    return SignatureDatabase.parse(variable_data(varstore, name, EFI_IMAGE_SECURITY_DATABASE))


@dataclass(frozen=True)
class GptDisk:
    """The GPT of the boot disk as the firmware measures it, and the partition booted from."""

    gpt: UefiGptData
    partition_number: int
    entry: bytes

    @classmethod
    def from_disk(cls, disk: bytes, partition_number: int = 1) -> GptDisk:
        """Read the primary GPT of a raw disk image (UEFI 2.10 section 5.3, 512-byte LBAs)."""
        header = disk[SECTOR_SIZE : SECTOR_SIZE + GPT_HEADER_LAYOUT.size]
        fields = GPT_HEADER_LAYOUT.unpack(header)
        if fields["signature"] != b"EFI PART":
            raise FormatError("boot disk: no GPT header at LBA 1")
        start = int(fields["partition_entry_lba"]) * SECTOR_SIZE
        size = int(fields["size_of_partition_entry"])
        count = int(fields["number_of_partition_entries"])
        if size < ENTRY_LAYOUT.size or start + count * size > len(disk):
            raise FormatError("boot disk: the partition entry array does not fit the disk")
        entries = [disk[start + i * size : start + (i + 1) * size] for i in range(count)]
        if not 1 <= partition_number <= count or not any(entries[partition_number - 1][:16]):
            raise FormatError(f"boot disk: partition {partition_number} is not in use")
        used = tuple(e for e in entries if any(e[:16]))
        return cls(UefiGptData(header, used), partition_number, entries[partition_number - 1])

    def hard_drive_node(self) -> DevicePathNode:
        """The HD() media node of the booted partition (UEFI 2.10 section 10.3.5.1)."""
        fields = ENTRY_LAYOUT.unpack(self.entry[: ENTRY_LAYOUT.size])
        first, last = int(fields["starting_lba"]), int(fields["ending_lba"])
        unique = self.entry[0x10:0x20]
        data = (self.partition_number.to_bytes(4, "little") + first.to_bytes(8, "little")
                + (last - first + 1).to_bytes(8, "little") + unique + bytes([0x02, 0x02]))
        return DevicePathNode(MEDIA, 0x01, data)


@dataclass(frozen=True)
class FirmwareSettings:
    """What the platform, not the owner, decides: devices, firmware volumes, boot attempts."""

    crtm_version: str = ""
    firmware_volumes: tuple[tuple[int, bytes], ...] = ()
    failed_boot_attempts: int = 0
    disk_path: tuple[DevicePathNode, ...] = VIRTIO_DISK_PATH


OVMF_MODEL_CRTM_VERSION = "cvm OVMF model 1.0"
FOUR_GIB = 1 << 32


def ovmf_model_settings(ovmf: bytes) -> FirmwareSettings:
    """What cvm's OVMF model measures of itself into PCR 0: its S-CRTM version string and its
    own image as one firmware volume at ``4 GiB - size`` (where the launch placed it)."""
    return FirmwareSettings(crtm_version=OVMF_MODEL_CRTM_VERSION,
                            firmware_volumes=((FOUR_GIB - len(ovmf), ovmf),))


class Firmware:
    """The firmware of one boot: measures the platform and loads the first image."""

    def __init__(
        self, boot: MeasuredBoot, varstore: Varstore, esp: EspFiles, disk: GptDisk | None,
        settings: FirmwareSettings | None = None,
    ) -> None:
        self.boot = boot
        self.varstore = varstore
        self.esp = esp
        self.disk = disk
        self.settings = settings or FirmwareSettings()
        self._attempts = 0
        self._gpt_measured = False
        self._next_address = IMAGE_TOP_ADDRESS
        self._authorities: set[bytes] = set()

    # --- the Secure Boot policy ---------------------------------------------------------

    def variable_data(self, name: str, vendor: Guid) -> bytes:
        return variable_data(self.varstore, name, vendor)

    @property
    def secure_boot(self) -> bool:
        return secure_boot_enabled(self.varstore)

    def database(self, name: str) -> SignatureDatabase:
        return security_database(self.varstore, name)

    # --- measurements -------------------------------------------------------------------

    def power_on(self) -> None:
        """PCR 0 (S-CRTM version, firmware volumes) and PCR 7 (Secure Boot policy, separator)."""
        version = (self.settings.crtm_version + "\0").encode("utf-16-le")
        self.boot.measure(0, EventType.EV_S_CRTM_VERSION, version)
        for base, volume in self.settings.firmware_volumes:
            blob = FirmwareBlob(base, len(volume))
            self.boot.measure(0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, blob.to_bytes(), volume)
        secure_boot = UefiVariableData(EFI_GLOBAL_VARIABLE, "SecureBoot",
                                       bytes([1 if self.secure_boot else 0]))
        self.boot.measure_variable(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, secure_boot)
        for name, vendor in policy_variables(self.varstore):
            variable = UefiVariableData(vendor, name, self.variable_data(name, vendor))
            self.boot.measure_variable(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, variable)
        self.boot.measure_separator(7)

    def ready_to_boot(self) -> None:
        """One boot attempt begins (edk2 ``OnReadyToBoot``)."""
        if self._attempts == 0:
            self._measure_boot_variables()
            self.boot.measure_action(4, CALLING)
            for pcr in range(7):
                self.boot.measure_separator(pcr)
        else:
            self.boot.measure_action(4, RETURNING)
            self.boot.measure_action(4, CALLING)
        self._attempts += 1

    def _measure_boot_variables(self) -> None:
        order = self.varstore.get("BootOrder", EFI_GLOBAL_VARIABLE)
        if order is None:
            return
        self.boot.measure_variable(1, EventType.EV_EFI_VARIABLE_BOOT,
                                   UefiVariableData(EFI_GLOBAL_VARIABLE, "BootOrder", order.data))
        for i in range(0, len(order.data) - 1, 2):
            name = f"Boot{int.from_bytes(order.data[i:i + 2], 'little'):04X}"
            option = self.varstore.get(name, EFI_GLOBAL_VARIABLE)
            if option is not None:
                self.boot.measure_variable(1, EventType.EV_EFI_VARIABLE_BOOT,
                                           UefiVariableData(EFI_GLOBAL_VARIABLE, name, option.data))

    def allocate(self, size: int) -> int:
        """A load address for an image of ``size`` bytes (below the previous one)."""
        self._next_address -= (size + 2 * PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
        return self._next_address + 0x18

    def measure_authority(self, decision: Decision) -> None:
        """EV_EFI_VARIABLE_AUTHORITY for the entry that allowed an image, once per entry."""
        if decision.matched is None:
            return
        variable = UefiVariableData(decision.variable_vendor, decision.database,
                                    decision.matched.to_bytes())
        data = variable.to_bytes()
        if data in self._authorities:
            return
        self._authorities.add(data)
        self.boot.measure_variable(7, EventType.EV_EFI_VARIABLE_AUTHORITY, variable)

    def _verify(self, image: bytes, name: str) -> PeImage | None:
        """With Secure Boot on, the image parsed and allowed (its authority measured)."""
        if not self.secure_boot:
            return None
        parsed = PeImage.parse(image)
        decision = verify_image(parsed, self.database("db"), self.database("dbx"), name=name)
        if not decision.allowed:
            raise PolicyError(f"firmware refused {decision}")
        self.measure_authority(decision)
        return parsed

    def load_buffer(self, image: bytes, name: str) -> None:
        """LoadImage of an image already in memory (no device path), e.g. GRUB without shim."""
        parsed = self._verify(image, name)
        load = UefiImageLoadEvent(self.allocate(len(image)), len(image), 0, DevicePath(()))
        self.boot.measure_pe_image(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
                                   parsed or image, load)

    def load_image(self, path: str = DEFAULT_LOADER) -> bytes:
        """LoadImage of a file on the boot disk: verify, measure authority, GPT and image."""
        return self.load_pe(path).data

    def load_pe(self, path: str = DEFAULT_LOADER) -> PeImage:
        """:meth:`load_image`, returning the image as the loader parsed it."""
        image = self.esp.read(path, "firmware")
        parsed = self._verify(image, path)
        nodes: list[DevicePathNode] = list(self.settings.disk_path)
        if self.disk is not None:
            if not self._gpt_measured:
                self.boot.measure(5, EventType.EV_EFI_GPT_EVENT, self.disk.gpt.to_bytes())
                self._gpt_measured = True
            nodes.append(self.disk.hard_drive_node())
        file_node = DevicePath.file_path(path.replace("/", "\\")).nodes[0]
        load = UefiImageLoadEvent(self.allocate(len(image)), len(image), 0,
                                  DevicePath((*nodes, file_node, END_NODE)))
        parsed = parsed or PeImage.parse(image)
        self.boot.measure_pe_image(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, parsed, load)
        return parsed

    def boot_from_disk(self, path: str = DEFAULT_LOADER) -> bytes:
        """The boot manager: the failed attempts, then the disk's loader, loaded and measured."""
        return self.boot_pe(path).data

    def boot_pe(self, path: str = DEFAULT_LOADER) -> PeImage:
        """:meth:`boot_from_disk`, returning the loader as the firmware parsed it."""
        for _ in range(self.settings.failed_boot_attempts):
            self.ready_to_boot()
        self.ready_to_boot()
        return self.load_pe(path)

    def exit_boot_services(self) -> None:
        """The OS loader calls ExitBootServices (edk2 ``OnExitBootServices``)."""
        self.boot.measure_action(5, EXIT_BOOT_SERVICES)
        self.boot.measure_action(5, EXIT_BOOT_SERVICES_OK)
