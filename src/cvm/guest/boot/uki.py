"""A unified kernel image (UKI) started by systemd-stub: its sections measured into PCR 11.

systemd ``src/boot/efi/stub.c`` and ``docs/TPM2_PCR_MEASUREMENTS.md`` (systemd 252, the version
Debian bookworm ships; the section list is ``src/fundamental/tpm-pcr.c``
``unified_sections[]``): for each section present, in the canonical order ``.linux .osrel
.cmdline .initrd .splash .dtb .pcrsig .pcrpkey`` except ``.pcrsig``, the stub logs two EV_IPL
events into PCR 11 whose event data is the section name in UTF-16 with NUL: the first with
digest H(name in ASCII with NUL), the second with digest H(section contents, VirtualSize bytes).
The stub then starts the embedded kernel, passing ``.initrd`` through LoadFile2 and ``.cmdline``
as the command line. Later, systemd-pcrphase extends H(phase) (``enter-initrd``, ...) into
PCR 11 from the running system, outside the firmware's log.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.pe.image import PeImage
from cvm.formats.tcg.algorithm import algorithm_by_name
from cvm.formats.tcg.event_type import EventType
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import PcrBank

UKI_PCR = 11
SYSTEMD_252_SECTIONS = (".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey")


@dataclass(frozen=True)
class UkiContents:
    """The parts of a UKI the stub uses to start Linux."""

    kernel: bytes
    cmdline: str
    initrd: bytes
    measured: tuple[tuple[str, bytes], ...]


def uki_sections(image: bytes | PeImage,
                 order: tuple[str, ...] = SYSTEMD_252_SECTIONS) -> tuple[tuple[str, bytes], ...]:
    """The measured sections of a UKI in measuring order, each with its loaded contents."""
    pe = image if isinstance(image, PeImage) else PeImage.parse(image)
    found = []
    for name in order:
        section = pe.section(name)
        if section is not None and section.virtual_size:
            found.append((name, section.loaded_data))
    if not found or found[0][0] != ".linux":
        raise FormatError("UKI: no .linux section")
    return tuple(found)


def measure_sections(boot: MeasuredBoot, sections: tuple[tuple[str, bytes], ...]) -> None:
    """The two PCR 11 events of each (name, contents) section, in the order given."""
    for name, contents in sections:
        label = (name + "\0").encode("utf-16-le")
        boot.measure(UKI_PCR, EventType.EV_IPL, label, hashed=(name + "\0").encode("ascii"))
        boot.measure(UKI_PCR, EventType.EV_IPL, label, hashed=contents)


def measure_uki(boot: MeasuredBoot, image: bytes | PeImage,
                order: tuple[str, ...] = SYSTEMD_252_SECTIONS) -> UkiContents:
    """systemd-stub's PCR 11 measurements of ``image``; returns what it boots."""
    sections = uki_sections(image, order)
    measure_sections(boot, sections)
    parts = dict(sections)
    cmdline = parts.get(".cmdline", b"").split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return UkiContents(parts[".linux"], cmdline, parts.get(".initrd", b""), sections)


def extend_phase(pcrs: PcrBank, phase: str) -> None:
    """systemd-pcrphase: extend PCR 11 by H(phase) in every bank (no firmware log entry)."""
    data = phase.encode("utf-8")
    pcrs.extend(UKI_PCR, {bank: algorithm_by_name(bank).digest(data) for bank in pcrs.banks})
