"""Predicting the PCRs a boot will produce, from its files, without booting.

The owner seals the disk key to PCR values before the VM ever runs, so cvm computes them from
the inputs alone: the ESP (boot chain, grub.cfg, kernel, initrd or a UKI), the varstore, the
disk's GPT and the platform settings. Each PCR's list of digests is composed directly from the
rules of the PC Client PFP 1.05 r23 (section 3.3.4) and of each component (see the stage
modules under :mod:`cvm.boot` for the citations): per PCR only the order of its own
measurements matters, so no stage is run except GRUB's script interpreter, which decides which
commands and files GRUB measures. The values are then folded with the TPM's extend
(:func:`cvm.formats.tcg.replay.extend`). The emulated boot must produce the same values bit for
bit, which the tests check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cvm.errors import PolicyError
from cvm.formats.grub.core_image import GrubCoreImage
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.tcg.algorithm import algorithm_by_name
from cvm.formats.tcg.replay import extend, initial_value
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.formats.uefi.guids import EFI_GLOBAL_VARIABLE, SHIM_LOCK_GUID
from cvm.guest.boot.chain import BootChain, loader_kind
from cvm.guest.boot.firmware import (
    CALLING,
    EXIT_BOOT_SERVICES,
    EXIT_BOOT_SERVICES_OK,
    RETURNING,
    policy_variables,
    secure_boot_enabled,
    security_database,
    variable_data,
)
from cvm.guest.boot.grub import Grub
from cvm.guest.boot.kernel import (
    INITRD_EVENT,
    LOAD_OPTIONS_EVENT,
    STUB_PCR,
    StubOptions,
    measures_load_options,
)
from cvm.guest.boot.measured_boot import SEPARATOR_DATA, MeasuredBoot
from cvm.guest.boot.pcr_bank import DEFAULT_BANKS, SoftwarePcrBank
from cvm.guest.boot.secureboot import Decision, verify_image
from cvm.guest.boot.shim import MOK_PCR, mok_list_trusted, shim_state
from cvm.guest.boot.shim_policy import verify_next_stage
from cvm.guest.boot.uki import UKI_PCR, uki_sections


@dataclass(frozen=True)
class Measurement:
    """One predicted extend: what it is and its digest per bank."""

    description: str
    digests: dict[str, bytes]


@dataclass
class PcrPrediction:
    """Predicted measurements per PCR and the PCR values they give, per bank."""

    banks: tuple[str, ...]
    measurements: dict[int, list[Measurement]] = field(default_factory=dict)
    startup_locality: int = 0

    def add(self, pcr: int, description: str, data: bytes) -> None:
        digests = {b: algorithm_by_name(b).digest(data) for b in self.banks}
        self.add_digests(pcr, description, digests)

    def add_digests(self, pcr: int, description: str, digests: dict[str, bytes]) -> None:
        self.measurements.setdefault(pcr, []).append(Measurement(description, digests))

    def values(self, bank: str) -> dict[int, bytes]:
        """PCR index -> predicted value, for every PCR the boot extends."""
        algorithm = algorithm_by_name(bank)
        result = {}
        for pcr, items in sorted(self.measurements.items()):
            value = initial_value(pcr, algorithm, self.startup_locality)
            for item in items:
                value = extend(algorithm, value, item.digests[bank])
            result[pcr] = value
        return result


def _authority(prediction: PcrPrediction, decision: Decision, seen: set[bytes]) -> None:
    if not decision.allowed:
        raise PolicyError(f"the boot would be refused: {decision}")
    if decision.matched is None:
        return
    data = UefiVariableData(decision.variable_vendor, decision.database,
                            decision.matched.to_bytes()).to_bytes()
    if data not in seen:
        seen.add(data)
        prediction.add(7, f"authority {decision.database} for {decision.image}", data)


def _image(prediction: PcrPrediction, name: str, image: bytes) -> None:
    digests = {bank: image_digest(image, bank) for bank in prediction.banks}
    prediction.add_digests(4, f"image {name}", digests)


def _firmware(prediction: PcrPrediction, chain: BootChain) -> None:
    settings, varstore = chain.settings, chain.varstore
    prediction.add(0, "S-CRTM version", (settings.crtm_version + "\0").encode("utf-16-le"))
    for base, volume in settings.firmware_volumes:
        prediction.add(0, f"firmware volume {base:#x}", volume)
    secure = secure_boot_enabled(varstore)
    prediction.add(7, "SecureBoot", UefiVariableData(
        EFI_GLOBAL_VARIABLE, "SecureBoot", bytes([int(secure)])).to_bytes())
    for name, vendor in policy_variables(varstore):
        prediction.add(7, name, UefiVariableData(
            vendor, name, variable_data(varstore, name, vendor)).to_bytes())
    prediction.add(7, "separator", SEPARATOR_DATA)
    order = varstore.get("BootOrder", EFI_GLOBAL_VARIABLE)
    if order is not None:
        prediction.add(1, "BootOrder", order.data)
        for i in range(0, len(order.data) - 1, 2):
            name = f"Boot{int.from_bytes(order.data[i:i + 2], 'little'):04X}"
            option = varstore.get(name, EFI_GLOBAL_VARIABLE)
            if option is not None:
                prediction.add(1, name, option.data)
    prediction.add(4, CALLING, CALLING.encode("ascii"))
    for pcr in range(7):
        prediction.add(pcr, "separator", SEPARATOR_DATA)
    for _ in range(settings.failed_boot_attempts):
        prediction.add(4, RETURNING, RETURNING.encode("ascii"))
        prediction.add(4, CALLING, CALLING.encode("ascii"))


def predict(chain: BootChain, banks: Sequence[str] = DEFAULT_BANKS) -> PcrPrediction:
    """The measurements and PCR values of booting ``chain``; PolicyError if it would not boot."""
    prediction = PcrPrediction(tuple(banks))
    _firmware(prediction, chain)
    varstore, esp = chain.varstore, chain.esp
    secure = secure_boot_enabled(varstore)
    db, dbx = security_database(varstore, "db"), security_database(varstore, "dbx")
    loader = esp.read(chain.loader, "prediction")
    firmware_seen: set[bytes] = set()
    if secure:
        _authority(prediction, verify_image(loader, db, dbx, name=chain.loader), firmware_seen)
    if chain.disk is not None:
        prediction.add(5, "GPT", chain.disk.gpt.to_bytes())
    _image(prediction, chain.loader, loader)
    kind = loader_kind(loader)
    options = chain.stub
    if kind == "uki":
        sections = uki_sections(loader)
        for name, contents in sections:
            prediction.add(UKI_PCR, f"{name} name", (name + "\0").encode("ascii"))
            prediction.add(UKI_PCR, f"{name} contents", contents)
        parts = dict(sections)
        initrd = parts.get(".initrd", b"")
        cmdline = parts.get(".cmdline", b"").split(b"\0", 1)[0].decode("utf-8", "replace").strip()
        options = StubOptions(True, chain.stub.measure_load_options
                              or measures_load_options(parts.get(".linux", b"")))
    else:
        cmdline, initrd = _shim_and_grub(prediction, chain, loader, kind, firmware_seen)
    if options.measure_load_options:
        prediction.add(STUB_PCR, LOAD_OPTIONS_EVENT.text() or "", (cmdline + "\0").encode(
            "utf-16-le"))
    if options.initrd_via_load_file2 and initrd:
        prediction.add(STUB_PCR, INITRD_EVENT.text() or "", initrd)
    prediction.add(5, EXIT_BOOT_SERVICES, EXIT_BOOT_SERVICES.encode("ascii"))
    prediction.add(5, EXIT_BOOT_SERVICES_OK, EXIT_BOOT_SERVICES_OK.encode("ascii"))
    return prediction


def _shim_and_grub(prediction: PcrPrediction, chain: BootChain, loader: bytes, kind: str,
                   firmware_seen: set[bytes]) -> tuple[str, bytes]:
    secure = secure_boot_enabled(chain.varstore)
    grub_image, grub_path, state = loader, chain.loader, None
    seen: set[bytes] = set()
    if kind == "shim":
        state = shim_state(chain.varstore, security_database(chain.varstore, "db"),
                           security_database(chain.varstore, "dbx"), loader)
        prediction.add(MOK_PCR, "MokList", state.mok_list_rt.to_bytes())
        prediction.add(MOK_PCR, "MokListX", state.mok_list_x_rt.to_bytes())
        if state.sbat_level is not None:
            prediction.add(7, "SbatLevel", UefiVariableData(
                SHIM_LOCK_GUID, "SbatLevel", state.sbat_level.to_bytes()).to_bytes())
        prediction.add(MOK_PCR, "MokListTrusted", mok_list_trusted(chain.varstore))
        grub_path = chain.loader.replace("/", "\\").rsplit("\\", 1)[0] + "\\grubx64.efi"
        grub_image = chain.esp.read(grub_path, "prediction")
        if secure:
            _authority(prediction, verify_next_stage(grub_image, state, name=grub_path), seen)
        _image(prediction, grub_path, grub_image)
    elif kind != "grub":
        raise PolicyError(f"{chain.loader}: cvm predicts UKI, shim and GRUB boot paths only")
    recorder = MeasuredBoot(SoftwarePcrBank(prediction.banks))
    partition = chain.disk.partition_number if chain.disk is not None else 1
    grub = Grub(recorder, chain.esp, GrubCoreImage.parse(grub_image), grub_path, None, partition)
    request = grub.run()
    for event in recorder.events:
        digests = {b: event.digest(algorithm_by_name(b).alg_id) or b"" for b in prediction.banks}
        text = event.event.rstrip(b"\0").decode("utf-8", "replace")
        prediction.add_digests(event.pcr_index, text, digests)
    if state is not None:
        # GRUB has shim verify the kernel (shim_lock) and load it (LoadImage hook): two PCR 4
        # events and at most one new authority.
        if secure:
            _authority(prediction, verify_next_stage(
                request.kernel, state, name=request.kernel_path, in_protocol=True), seen)
        _image(prediction, request.kernel_path, request.kernel)
        _image(prediction, request.kernel_path, request.kernel)
    else:
        # Without shim, GRUB has the firmware LoadImage the kernel: db/dbx, once in PCR 4.
        if secure:
            db = security_database(chain.varstore, "db")
            dbx = security_database(chain.varstore, "dbx")
            _authority(prediction, verify_image(request.kernel, db, dbx,
                                                name=request.kernel_path), firmware_seen)
        _image(prediction, request.kernel_path, request.kernel)
    return request.cmdline, request.initrd
