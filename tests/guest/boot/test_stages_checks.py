"""The last stages and the measuring core, decision by decision: the kernel's EFI stub (PCR 9,
ExitBootServices), systemd-stub's PCR 11 sections, HashLogExtendEvent's digests and log, and
the chain's choice of stages by what the first image is."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import pytest

from cvm.errors import FormatError, PolicyError, StateError, UsageError
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.tcg.algorithm import algorithm_by_name
from cvm.formats.tcg.device_path import DevicePath
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.no_action import StartupLocalityEvent
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.replay import extend, initial_value
from cvm.formats.tcg.tagged_event import TaggedEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain, loader_kind
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import DEFAULT_LOADER, Firmware, FirmwareSettings, GptDisk
from cvm.guest.boot.kernel import StubOptions, measures_load_options, start_kernel
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.guest.boot.uki import (
    SYSTEMD_252_SECTIONS,
    UKI_PCR,
    extend_phase,
    measure_sections,
    measure_uki,
    uki_sections,
)
from cvm.image.boot_chain import build_chain, make_kernel
from cvm.image.keys import OwnerKeys
from cvm.wire import Guid

SHA1, SHA256 = 0x0004, 0x000B
VENDOR = Guid.parse("8be4df61-93ca-11d2-aa0d-00e098032b8c")
LOADER = "/EFI/BOOT/BOOTX64.EFI"


def _boot(banks: tuple[str, ...] = ("sha1", "sha256")) -> MeasuredBoot:
    return MeasuredBoot(SoftwarePcrBank(banks))


def _firmware() -> Firmware:
    return Firmware(_boot(), Varstore.empty_4m(), EspFiles({}), None)


def _pe(*sections: tuple[str, bytes]) -> bytes:
    return build_pe([SectionSpec(".text", b"\xc3", CODE),
                     *(SectionSpec(name, data) for name, data in sections)])


# --- the kernel's EFI stub ------------------------------------------------------------------


def test_the_stub_measures_load_options_then_the_initrd_into_pcr9() -> None:
    firmware = _firmware()
    start_kernel(firmware, "root=/dev/vda2 é", b"initrd",
                 StubOptions(initrd_via_load_file2=True, measure_load_options=True))
    options, initrd, invocation, success = firmware.boot.events
    assert [(e.pcr_index, e.event_type) for e in (options, initrd)] == [
        (9, EventType.EV_EVENT_TAG)] * 2
    assert TaggedEvent.parse(options.event) == TaggedEvent(0x8F3B22ED,
                                                           b"LOADED_IMAGE::LoadOptions\0")
    assert options.digest(SHA256) == hashlib.sha256(
        "root=/dev/vda2 é\0".encode("utf-16-le")).digest()
    assert TaggedEvent.parse(initrd.event) == TaggedEvent(0x8F3B22EC, b"Linux initrd\0")
    assert initrd.digest(SHA1) == hashlib.sha1(b"initrd").digest()
    assert [(e.pcr_index, e.event) for e in (invocation, success)] == [
        (5, b"Exit Boot Services Invocation"), (5, b"Exit Boot Services Returned with Success")]


@pytest.mark.parametrize("options", [None, StubOptions()])
def test_by_default_the_stub_measures_nothing(options: StubOptions | None) -> None:
    firmware = _firmware()
    start_kernel(firmware, "quiet", b"initrd", options)
    assert [e.pcr_index for e in firmware.boot.events] == [5, 5]


def test_an_empty_initrd_or_one_in_boot_params_is_not_measured() -> None:
    for initrd, via_load_file2 in ((b"", True), (b"initrd", False)):
        firmware = _firmware()
        start_kernel(firmware, "quiet", initrd, StubOptions(initrd_via_load_file2=via_load_file2))
        assert [e.pcr_index for e in firmware.boot.events] == [5, 5]


def test_the_kernels_own_bytes_decide_whether_it_measures_load_options() -> None:
    assert measures_load_options(b"...LOADED_IMAGE::LoadOptions...")
    assert not measures_load_options(b"...LOADED_IMAGE::LoadOption...")
    assert not measures_load_options(b"")


# --- systemd-stub ---------------------------------------------------------------------------


def test_the_sections_are_taken_in_systemds_order() -> None:
    assert SYSTEMD_252_SECTIONS == (".linux", ".osrel", ".cmdline", ".initrd", ".splash",
                                    ".dtb", ".pcrpkey")
    uki = _pe((".initrd", b"I"), (".pcrsig", b"S"), (".cmdline", b"C\0"), (".linux", b"L"),
              (".splash", b""), (".pcrpkey", b"P"), (".osrel", b"O"))
    sections = uki_sections(uki)
    assert [name for name, _ in sections] == [".linux", ".osrel", ".cmdline", ".initrd",
                                              ".pcrpkey"]
    assert [data[:2] for _, data in sections] == [b"L", b"O", b"C\0", b"I", b"P"]
    custom = uki_sections(uki, (".linux", ".pcrsig"))
    assert [name for name, _ in custom] == [".linux", ".pcrsig"]


def test_the_first_measured_section_must_be_linux() -> None:
    with pytest.raises(FormatError, match=r"^UKI: no \.linux section$"):
        uki_sections(_pe((".osrel", b"O")))
    with pytest.raises(FormatError, match=r"^UKI: no \.linux section$"):
        uki_sections(_pe((".osrel", b"O"), (".linux", b"L")), (".osrel", ".linux"))
    with pytest.raises(FormatError, match=r"^UKI: no \.linux section$"):
        uki_sections(_pe((".linux", b"")))


def test_each_section_is_two_pcr11_events() -> None:
    boot = _boot()
    measure_sections(boot, ((".linux", b"kernel"), (".osrel", b"ID=x")))
    events = boot.events
    assert [(e.pcr_index, e.event_type) for e in events] == [(11, EventType.EV_IPL)] * 4
    assert [e.event for e in events] == [".linux\0".encode("utf-16-le")] * 2 + [
        ".osrel\0".encode("utf-16-le")] * 2
    assert [e.digest(SHA256) for e in events] == [
        hashlib.sha256(x).digest() for x in (b".linux\0", b"kernel", b".osrel\0", b"ID=x")]


def test_the_uki_gives_its_kernel_command_line_and_initrd() -> None:
    uki = _pe((".linux", b"KERNEL"), (".cmdline", b"  console=ttyS0 quiet \0junk"),
              (".initrd", b"INITRD"))
    contents = measure_uki(_boot(), uki)
    assert (contents.kernel[:6], contents.cmdline, contents.initrd[:6]) == (
        b"KERNEL", "console=ttyS0 quiet", b"INITRD")
    assert [name for name, _ in contents.measured] == [".linux", ".cmdline", ".initrd"]
    two = measure_uki(_boot(), _pe((".linux", b"K"), (".cmdline", b"a\0b\0c")))
    assert two.cmdline == "a"
    bare = measure_uki(_boot(), _pe((".linux", b"K")))
    assert (bare.cmdline, bare.initrd) == ("", b"")
    bad = measure_uki(_boot(), _pe((".linux", b"K"), (".cmdline", b"\xff ok")))
    assert bad.cmdline == "\ufffd ok"


def test_measure_uki_follows_the_order_given() -> None:
    uki = _pe((".linux", b"L"), (".osrel", b"O"), (".pcrsig", b"S"))
    boot = _boot()
    contents = measure_uki(boot, uki, (".linux", ".pcrsig"))
    assert [name for name, _ in contents.measured] == [".linux", ".pcrsig"]
    assert len(boot.events) == 4


def test_a_phase_extends_pcr11_in_every_bank() -> None:
    pcrs = SoftwarePcrBank(("sha1", "sha256"))
    extend_phase(pcrs, "enter-initrd")
    for bank in ("sha1", "sha256"):
        algorithm = algorithm_by_name(bank)
        expected = extend(algorithm, initial_value(UKI_PCR, algorithm),
                          algorithm.digest(b"enter-initrd"))
        assert pcrs.read(UKI_PCR, bank) == expected
        assert pcrs.read(10, bank) == initial_value(10, algorithm)


# --- HashLogExtendEvent ----------------------------------------------------------------------


def test_measure_hashes_the_event_data_or_what_is_given() -> None:
    pcrs = SoftwarePcrBank(("sha1", "sha256"))
    boot = MeasuredBoot(pcrs)
    own = boot.measure(3, EventType.EV_IPL, b"data")
    other = boot.measure(3, EventType.EV_IPL, b"label", hashed=b"payload")
    empty = boot.measure(3, EventType.EV_IPL, b"label", hashed=b"")
    assert own == PcrEvent(3, EventType.EV_IPL, (
        (SHA1, hashlib.sha1(b"data").digest()), (SHA256, hashlib.sha256(b"data").digest())),
        b"data")
    assert other.digest(SHA256) == hashlib.sha256(b"payload").digest()
    assert empty.digest(SHA256) == hashlib.sha256(b"").digest()
    assert boot.events == (own, other, empty)
    value = initial_value(3, algorithm_by_name("sha256"))
    for event in boot.events:
        digest = event.digest(SHA256)
        assert digest is not None
        value = extend(algorithm_by_name("sha256"), value, digest)
    assert pcrs.read(3, "sha256") == value


def test_digests_are_needed_for_every_bank_and_no_other() -> None:
    boot = _boot()
    for digests in ({"sha256": bytes(32)}, {"sha1": bytes(20), "sha256": bytes(32),
                                            "sha384": bytes(48)}):
        with pytest.raises(UsageError) as caught:
            boot.measure_digests(4, EventType.EV_IPL, b"", digests)
        assert str(caught.value) == (
            f"measurement needs a digest for each bank ('sha1', 'sha256'), "
            f"got {sorted(digests)}")
    assert boot.events == ()


def test_an_event_that_cannot_be_logged_extends_nothing() -> None:
    pcrs = SoftwarePcrBank(("sha256",))
    boot = MeasuredBoot(pcrs)
    with pytest.raises(UsageError, match="must be 32 bytes"):
        boot.measure_digests(4, EventType.EV_IPL, b"", {"sha256": bytes(31)})
    assert pcrs.read(4, "sha256") == bytes(32) and boot.events == ()


def test_the_log_has_the_spec_id_of_the_banks_and_goes_to_the_sink() -> None:
    seen: list[EventLog] = []
    boot = MeasuredBoot(SoftwarePcrBank(("sha256", "sha1")), sink=seen.append)
    assert [(a.alg_id, a.digest_size) for a in boot.spec_id.algorithms] == [
        (SHA256, 32), (SHA1, 20)]
    boot.measure_action(4, "Hello")
    boot.log_no_action(0, b"note")
    assert len(seen) == 2 and seen[-1] == boot.log
    assert seen[0].events == boot.events[:1]
    action, note = boot.events
    assert action == PcrEvent(4, EventType.EV_EFI_ACTION, (
        (SHA256, hashlib.sha256(b"Hello").digest()), (SHA1, hashlib.sha1(b"Hello").digest())),
        b"Hello")
    assert note == PcrEvent(0, EventType.EV_NO_ACTION, ((SHA256, bytes(32)), (SHA1, bytes(20))),
                            b"note")
    assert EventLog.parse(boot.log.to_bytes()) == boot.log


def test_startup_locality_zero_logs_nothing() -> None:
    assert MeasuredBoot(SoftwarePcrBank(("sha256",))).events == ()
    (event,) = MeasuredBoot(SoftwarePcrBank(("sha256",)), startup_locality=3).events
    assert (event.pcr_index, event.event_type) == (0, EventType.EV_NO_ACTION)
    assert StartupLocalityEvent.parse(event.event).locality == 3


def test_separators_and_variables() -> None:
    boot = _boot()
    separator = boot.measure_separator(6)
    assert (separator.pcr_index, separator.event_type, separator.event) == (
        6, EventType.EV_SEPARATOR, b"\0\0\0\0")
    assert separator.digest(SHA256) == hashlib.sha256(bytes(4)).digest()
    variable = UefiVariableData(VENDOR, "Boot0001", b"option")
    for event_type in (EventType.EV_EFI_VARIABLE_AUTHORITY, EventType.EV_EFI_VARIABLE_BOOT2):
        event = boot.measure_variable(7, event_type, variable)
        assert event.digest(SHA256) == hashlib.sha256(variable.to_bytes()).digest()
        assert event.event_type == event_type
    boot_event = boot.measure_variable(1, EventType.EV_EFI_VARIABLE_BOOT, variable)
    assert (boot_event.pcr_index, boot_event.event) == (1, variable.to_bytes())
    with pytest.raises(UsageError, match=r"^EV_IPL is not a variable event type$"):
        boot.measure_variable(4, EventType.EV_IPL, variable)


def test_an_image_is_measured_by_its_authenticode_hash(small_kernel: bytes) -> None:
    boot = _boot()
    load = UefiImageLoadEvent(0x1000, len(small_kernel), 0, DevicePath(()))
    event = boot.measure_pe_image(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, small_kernel,
                                  load)
    assert event.event == load.to_bytes()
    assert event.digest(SHA1) == image_digest(small_kernel, "sha1")
    assert event.digest(SHA256) == image_digest(small_kernel, "sha256")


# --- the chain ------------------------------------------------------------------------------


def test_the_first_images_sections_decide_its_kind() -> None:
    assert loader_kind(_pe((".linux", b"L"), (".vendor_cert", b"V"), ("mods", b"M"))) == "uki"
    assert loader_kind(_pe((".vendor_cert", b"V"), ("mods", b"M"))) == "shim"
    assert loader_kind(_pe((".sbatlevel", b"S"))) == "shim"
    assert loader_kind(_pe(("mods", b"M"))) == "grub"
    assert loader_kind(_pe((".data", b"D"))) == "linux"


def test_a_bare_kernel_as_the_first_image_is_refused(small_kernel: bytes) -> None:
    chain = BootChain(EspFiles({LOADER: small_kernel}), Varstore.empty_4m())
    with pytest.raises(StateError, match=r"^\\EFI\\BOOT\\BOOTX64\.EFI: a bare kernel as the first "
                                         r"image is not modelled$"):
        chain.run()


def test_a_chain_measures_into_the_bank_given_and_feeds_the_sink(
    make_uki: Callable[[bytes, str, bytes], bytes], small_kernel: bytes,
) -> None:
    esp = EspFiles({LOADER: make_uki(small_kernel, "quiet", b"initrd")})
    pcrs = SoftwarePcrBank(("sha256",))
    seen: list[EventLog] = []
    result = BootChain(esp, Varstore.empty_4m()).run(pcrs, sink=seen.append)
    assert seen[-1] == result.log
    assert [a.alg_id for a in result.log.spec_id.algorithms] == [SHA256]
    assert pcrs.read(11, "sha256") != bytes(32)
    default = BootChain(esp, Varstore.empty_4m()).run()
    assert [a.alg_id for a in default.log.spec_id.algorithms] == [SHA1, SHA256]


def test_a_uki_stub_measures_load_options_when_its_kernel_does(
    make_uki: Callable[[bytes, str, bytes], bytes], small_kernel: bytes,
) -> None:
    measuring = small_kernel + b"LOADED_IMAGE::LoadOptions\0"
    for kernel, stub, expected in ((small_kernel, StubOptions(), 1),
                                   (measuring, StubOptions(), 2),
                                   (small_kernel, StubOptions(measure_load_options=True), 2)):
        esp = EspFiles({LOADER: make_uki(kernel, "quiet", b"initrd")})
        result = BootChain(esp, Varstore.empty_4m(), stub=stub).run()
        tagged = [TaggedEvent.parse(e.event).tagged_event_id for e in result.log.events
                  if e.event_type == EventType.EV_EVENT_TAG]
        assert len(tagged) == expected
        assert tagged[-1] == 0x8F3B22EC  # the initrd, through LoadFile2
        assert result.request.kernel_path == DEFAULT_LOADER and result.request.initrd == b"initrd"
        assert result.request.kernel[:len(kernel)] == kernel


@pytest.fixture(scope="module")
def shim_chain() -> tuple[OwnerKeys, dict[str, bytes]]:
    keys = OwnerKeys.generate(bytes, pcr_policy=False)
    return keys, build_chain("shim-grub", keys, b"initrd!", "uuid", False).files


def test_a_shim_chain_runs_shim_then_grub_from_shims_directory(
    shim_chain: tuple[OwnerKeys, dict[str, bytes]],
) -> None:
    keys, files = shim_chain
    result = BootChain(EspFiles(files), keys.varstore()).run(SoftwarePcrBank(("sha256",)))
    assert result.stages == ("firmware", "shim", "grub", "linux")
    assert result.request.initrd == b"initrd!"
    assert result.request.kernel == files["/vmlinuz"]
    # GRUB knows where it was loaded from: $cmdpath is shim's directory.
    pcr14 = [e.event for e in result.log.events if e.pcr_index == 14]
    assert pcr14 == [b"MokList\0", b"MokListX\0", b"MokListTrusted\0"]
    images = [UefiImageLoadEvent.parse(e.event).device_path for e in result.log.events
              if e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION]
    assert images[1] == DevicePath.file_path(r"\EFI\BOOT\grubx64.efi")
    # The kernel's initrd came in boot_params (GRUB 2.06): no PCR 9 tagged event.
    assert EventType.EV_EVENT_TAG not in [e.event_type for e in result.log.events]


def _two_partition_disk() -> bytes:
    """A GPT whose second entry is the ESP (entry 1 unused)."""
    entry = (bytes(range(1, 17)) + bytes(range(17, 33)) + struct.pack("<QQQ", 40, 59, 0)
             + bytes(72))
    table = bytes(128) + entry + bytes(128 * 2)
    header = struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, 1, 127, 34, 100,
                         bytes(16), 2, 4, 128, 0)
    return bytes(512) + header.ljust(512, b"\0") + table.ljust(32 * 512, b"\0")


def test_grub_reads_the_gpt_partition_of_the_disk(
    shim_chain: tuple[OwnerKeys, dict[str, bytes]],
) -> None:
    keys, files = shim_chain
    disk = GptDisk.from_disk(_two_partition_disk(), 2)
    result = BootChain(EspFiles(files), keys.varstore(), disk).run()
    pcr9 = [e.event for e in result.log.events if e.pcr_index == 9]
    assert pcr9[0] == b"(hd0,gpt2)/EFI/BOOT/grub.cfg\0"
    assert sum(e.event_type == EventType.EV_EFI_GPT_EVENT for e in result.log.events) == 1


def test_the_chain_passes_the_platform_settings_and_stub_options(
    shim_chain: tuple[OwnerKeys, dict[str, bytes]],
) -> None:
    keys, files = shim_chain
    result = BootChain(EspFiles(files), keys.varstore(),
                       settings=FirmwareSettings(crtm_version="platform 7"),
                       stub=StubOptions(measure_load_options=True)).run()
    assert result.log.events[0].event == "platform 7\0".encode("utf-16-le")
    tagged = [TaggedEvent.parse(e.event).tagged_event_id for e in result.log.events
              if e.event_type == EventType.EV_EVENT_TAG]
    assert tagged == [0x8F3B22ED]


def test_grub_asks_shim_to_verify_the_kernel_by_its_path(
    shim_chain: tuple[OwnerKeys, dict[str, bytes]],
) -> None:
    keys, files = shim_chain
    unsigned = {**files, "/vmlinuz": make_kernel("6.1.0-unsigned")}
    with pytest.raises(PolicyError, match=r"^shim refused /vmlinuz: refused"):
        BootChain(EspFiles(unsigned), keys.varstore()).run()


def test_a_kernel_without_arguments_boots_through_shim(
    shim_chain: tuple[OwnerKeys, dict[str, bytes]],
) -> None:
    keys, files = shim_chain
    bare = {**files, "/EFI/BOOT/grub.cfg": b"linux /vmlinuz\nboot\n"}
    result = BootChain(EspFiles(bare), keys.varstore()).run()
    assert result.request.cmdline == "BOOT_IMAGE=/vmlinuz"
    images = [e for e in result.log.events
              if e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION]
    assert len(images) == 4  # shim, GRUB, the kernel verified, the kernel loaded
