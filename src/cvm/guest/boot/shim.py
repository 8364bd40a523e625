"""The shim stage: what shim measures at start-up and when it loads or verifies the next stage.

rhboot/shim 16.1 ``README.tpm`` and sources: at start-up (``mok.c``
``import_mok_state``/``mirror_one_mok_variable``) shim mirrors MokList (+ its vendor
certificate), MokListX (+ vendor_dbx) and measures each mirrored list into **PCR 14** as
EV_IPL whose event is the variable name with NUL and whose digest is the hash of the mirrored
data; it measures the SbatLevel it applies into **PCR 7** as EV_EFI_VARIABLE_AUTHORITY
(``SbatLevel``, shim-lock GUID) and MokListTrusted (its variable's data, 1 when unset) into
PCR 14. MokSBState and MokPolicy are not modelled. For each image it
verifies (``verify.c``) it measures the authorising entry into PCR 7 as
EV_EFI_VARIABLE_AUTHORITY (``db``, ``MokListRT`` or ``Shim``), each distinct entry once
(``tpm_data_measured``), and the image's Authenticode hash into **PCR 4**
(EV_EFI_BOOT_SERVICES_APPLICATION; ``tpm_log_pe``), with a file-path device path for images
shim loads itself and none for buffers GRUB hands it (the shim_lock protocol and shim's
LoadImage hook). The verification rules are :mod:`cvm.guest.boot.shim_policy`.
"""

from __future__ import annotations

from cvm.errors import PolicyError
from cvm.formats.pe.sbat import SbatLevel
from cvm.formats.tcg.device_path import DevicePath
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.formats.uefi.guids import SHIM_LOCK_GUID
from cvm.formats.uefi.signature_list import SignatureDatabase
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.firmware import Firmware
from cvm.guest.boot.secureboot import Decision
from cvm.guest.boot.shim_policy import ShimState, verify_next_stage

MOK_PCR = 14
MOK_LIST_TRUSTED_DEFAULT = b"\x01"
DEFAULT_SECOND_STAGE = "grubx64.efi"


def shim_state(varstore: Varstore, db: SignatureDatabase, dbx: SignatureDatabase,
               shim_image: bytes) -> ShimState:
    """The state shim decides with: firmware db/dbx, MokList, the SbatLevel it will apply."""
    mok = varstore.get("MokList", SHIM_LOCK_GUID)
    mok_list = SignatureDatabase.parse(mok.data) if mok is not None else SignatureDatabase()
    state = ShimState.from_shim(shim_image, db, dbx, mok_list)
    stored = varstore.get("SbatLevel", SHIM_LOCK_GUID)
    if stored is not None and state.sbat_level is not None:
        current = SbatLevel.parse(stored.data)
        if current.datestamp > state.sbat_level.datestamp:
            state = ShimState.from_shim(shim_image, state.db, state.dbx, mok_list, current)
    return state


def mok_list_trusted(varstore: Varstore) -> bytes:
    """The MokListTrusted state shim measures: the variable's data, 1 when it is not set."""
    found = varstore.get("MokListTrusted", SHIM_LOCK_GUID)
    return found.data if found is not None else MOK_LIST_TRUSTED_DEFAULT


class Shim:
    """shim running after the firmware loaded it from ``path`` on the ESP."""

    def __init__(self, firmware: Firmware, image: bytes, path: str) -> None:
        self.firmware = firmware
        self.boot = firmware.boot
        self.image = image
        self.path = path.replace("/", "\\")
        self.state = shim_state(firmware.varstore, firmware.database("db"),
                                firmware.database("dbx"), image)
        self._authorities: set[bytes] = set()

    def start(self) -> None:
        """The start-up measurements (MOK lists into PCR 14, SbatLevel into PCR 7)."""
        self.boot.measure(MOK_PCR, EventType.EV_IPL, b"MokList\0",
                          hashed=self.state.mok_list_rt.to_bytes())
        self.boot.measure(MOK_PCR, EventType.EV_IPL, b"MokListX\0",
                          hashed=self.state.mok_list_x_rt.to_bytes())
        if self.state.sbat_level is not None:
            level = UefiVariableData(SHIM_LOCK_GUID, "SbatLevel", self.state.sbat_level.to_bytes())
            self.boot.measure_variable(7, EventType.EV_EFI_VARIABLE_AUTHORITY, level)
        self.boot.measure(MOK_PCR, EventType.EV_IPL, b"MokListTrusted\0",
                          hashed=mok_list_trusted(self.firmware.varstore))

    def _verify(self, image: bytes, name: str, in_protocol: bool) -> Decision | None:
        if not self.firmware.secure_boot:
            return None
        decision = verify_next_stage(image, self.state, name=name, in_protocol=in_protocol)
        if not decision.allowed:
            raise PolicyError(f"shim refused {decision}")
        if decision.matched is not None:
            variable = UefiVariableData(decision.variable_vendor, decision.database,
                                        decision.matched.to_bytes())
            data = variable.to_bytes()
            if data not in self._authorities:
                self._authorities.add(data)
                self.boot.measure_variable(7, EventType.EV_EFI_VARIABLE_AUTHORITY, variable)
        return decision

    def _measure_image(self, image: bytes, path: DevicePath) -> None:
        load = UefiImageLoadEvent(self.firmware.allocate(len(image)), len(image), 0, path)
        self.boot.measure_pe_image(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, image, load)

    def second_stage_path(self, name: str = DEFAULT_SECOND_STAGE) -> str:
        """``name`` in shim's own directory (shim's ``DEFAULT_LOADER`` lookup)."""
        directory = self.path.rsplit("\\", 1)[0]
        return f"{directory}\\{name}"

    def load_second_stage(self, name: str = DEFAULT_SECOND_STAGE) -> bytes:
        """Read, verify (SBAT mandatory) and measure the second stage (GRUB)."""
        path = self.second_stage_path(name)
        image = self.firmware.esp.read(path, "shim")
        self._verify(image, path, in_protocol=False)
        self._measure_image(image, DevicePath.file_path(path))
        return image

    def verify(self, image: bytes, name: str) -> Decision | None:
        """The shim_lock protocol's Verify(): GRUB asks shim to check a buffer (the kernel)."""
        decision = self._verify(image, name, in_protocol=True)
        self._measure_image(image, DevicePath(()))
        return decision

    def load_image(self, image: bytes, name: str) -> None:
        """shim's LoadImage hook for an image GRUB loads from a buffer."""
        self._verify(image, name, in_protocol=True)
        self._measure_image(image, DevicePath(()))
