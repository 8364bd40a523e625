"""Launch-digest prediction against the known answers in vectors/snp/expected_digests.txt.

Each case names a line of that file (its section and the start of the line); the expected
digest is read from the file, so a wrong prediction fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.sev_area import SevArea
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.sev_hashes import SevHashTable
from cvm.formats.snp.vmsa import VmmType, Vmsa
from cvm.image.measurement import (
    SevMode,
    VcpuConfig,
    kernel_hashes_page,
    launch_digest,
    snp_launch_digest,
    snp_ovmf_digest,
    vmsa_pages,
)
from cvm.image.vcpu_types import VCPU_SIGNATURES, cpu_signature, vcpu_signature

AMDSEV = "ovmf_AmdSev_suffix.bin"
OVMFX64 = "ovmf_OvmfX64_suffix.bin"
EPYC_V4 = 0x00800F12
LOGLEVEL = "console=ttyS0 loglevel=7"
DEBIAN = {
    "OVMF_CODE.fd": Path("/usr/share/OVMF/OVMF_CODE.fd"),
    "OVMF.fd": Path("/usr/share/ovmf/OVMF.fd"),
    "OVMF_CODE_4M.fd": Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),
}


def _expected(vectors: Path, section: str, line_start: str) -> bytes:
    text = (vectors / "snp" / "expected_digests.txt").read_text()
    chunks = text.split("\n## ")
    matches = [c for c in chunks if c.startswith(section)]
    assert len(matches) == 1, section
    lines = [ln for ln in matches[0].splitlines() if ln.startswith(line_start)]
    assert len(lines) == 1, line_start
    return bytes.fromhex(lines[0].split()[-1])


def _fixture(vectors: Path, name: str) -> OvmfImage:
    path = vectors / "snp" / "sev-snp-measure" / "tests" / "fixtures" / name
    return OvmfImage.parse(path.read_bytes())


def _null_kernel(cmdline: str | None) -> SevHashTable:
    return SevHashTable.for_boot(b"", b"", cmdline)


SNP_CASES = [
    ("SNP (SHA-384", "snp  vcpus=1 EPYC-v4 gf=0x1  no kernel", AMDSEV, 1, 0x1, None, VmmType.QEMU),
    ("SNP (SHA-384", "snp  vcpus=1 EPYC-v4 gf=0x21 no kernel", AMDSEV, 1, 0x21, None, VmmType.QEMU),
    ("SNP (SHA-384", "snp  vcpus=4 EPYC-v4 gf=0x1  no kernel", AMDSEV, 4, 0x1, None, VmmType.QEMU),
    (
        "SNP (SHA-384",
        'snp  vcpus=1 EPYC-v4 gf=0x1  kernel=/dev/null initrd=/dev/null append="console',
        AMDSEV,
        1,
        0x1,
        LOGLEVEL,
        VmmType.QEMU,
    ),
    (
        "SNP (SHA-384",
        'snp  vcpus=1 EPYC-v4 gf=0x21 kernel=/dev/null initrd=/dev/null append="console',
        AMDSEV,
        1,
        0x21,
        LOGLEVEL,
        VmmType.QEMU,
    ),
    (
        "SNP (SHA-384",
        'snp  vcpus=1 EPYC-v4 gf=0x1  kernel=/dev/null initrd=/dev/null append=""',
        AMDSEV,
        1,
        0x1,
        "",
        VmmType.QEMU,
    ),
    (
        "SNP (SHA-384",
        'snp  vcpus=1 EPYC-v4 gf=0x21 kernel=/dev/null initrd=/dev/null append=""',
        AMDSEV,
        1,
        0x21,
        "",
        VmmType.QEMU,
    ),
    (
        "SNP (SHA-384",
        'snp  vcpus=4 EPYC-v4 gf=0x21 kernel=/dev/null initrd=/dev/null append=""',
        AMDSEV,
        4,
        0x21,
        "",
        VmmType.QEMU,
    ),
    (
        "SNP (SHA-384",
        'snp  vcpus=4 EPYC-v4 gf=0x1  kernel=/dev/null initrd=/dev/null append=""',
        AMDSEV,
        4,
        0x1,
        "",
        VmmType.QEMU,
    ),
    ("SNP (SHA-384", "snp  ec2  vcpus=1 EPYC-v4 gf=0x21", AMDSEV, 1, 0x21, "", VmmType.EC2),
    ("SNP (SHA-384", "snp  ec2  vcpus=1 EPYC-v4 gf=0x1 ", AMDSEV, 1, 0x1, "", VmmType.EC2),
    ("SNP (SHA-384", "snp  gce  vcpus=1", AMDSEV, 1, 0x1, "", VmmType.GCE),
    ("SNP (SHA-384", "snp  gce  vcpus=4", AMDSEV, 4, 0x1, "", VmmType.GCE),
    ("SNP, OVMF", "snp  vcpus=1 EPYC-v4 gf=0x21 no kernel", OVMFX64, 1, 0x21, None, VmmType.QEMU),
    ("SNP, OVMF", "snp  vcpus=1 EPYC-v4 gf=0x1  no kernel", OVMFX64, 1, 0x1, None, VmmType.QEMU),
]


@pytest.mark.parametrize(
    ("section", "line", "fixture", "vcpus", "features", "cmdline", "vmm"), SNP_CASES
)
def test_snp_known_answers(
    vectors: Path,
    section: str,
    line: str,
    fixture: str,
    vcpus: int,
    features: int,
    cmdline: str | None,
    vmm: VmmType,
) -> None:
    image = _fixture(vectors, fixture)
    hashes = None if cmdline is None else _null_kernel(cmdline)
    signature = 0 if vmm is VmmType.GCE else EPYC_V4  # GCE ignores the signature
    digest = snp_launch_digest(image, VcpuConfig(vcpus, signature, features, vmm), hashes)
    assert digest == _expected(vectors, section, line)


def test_snp_ovmf_hash_and_seeding(vectors: Path) -> None:
    image = _fixture(vectors, AMDSEV)
    ovmf_hash = snp_ovmf_digest(image)
    assert ovmf_hash == _expected(vectors, "SNP (SHA-384", "snp:ovmf-hash")
    config = VcpuConfig(4, EPYC_V4, 0x21)
    hashes = _null_kernel("")
    seeded = snp_launch_digest(image, config, hashes, ovmf_digest=ovmf_hash)
    assert seeded == snp_launch_digest(image, config, hashes)
    # The seed replaces the firmware pages: a different image with the same metadata agrees.
    other = OvmfImage.parse(bytes(0x1000)[:0] + image.data.replace(b"\x00" * 16, b"\x01" * 16, 1))
    assert snp_launch_digest(other, config, hashes, ovmf_digest=ovmf_hash) == seeded
    assert snp_launch_digest(other, config, hashes) != seeded


@pytest.mark.parametrize(("line", "vcpus"), [("seves vcpus=1", 1), ("seves vcpus=4", 4)])
def test_sev_es_known_answers(vectors: Path, line: str, vcpus: int) -> None:
    image = _fixture(vectors, AMDSEV)
    digest = launch_digest(SevMode.SEV_ES, image, VcpuConfig(vcpus, EPYC_V4), _null_kernel(""))
    assert digest == _expected(vectors, "SEV-ES", line)


@pytest.mark.parametrize(
    ("line", "fixture", "hashes"),
    [
        ("sev  kernel=/dev/null initrd=/dev/null", AMDSEV, _null_kernel(LOGLEVEL)),
        ("sev  kernel=/dev/null (no initrd", AMDSEV, SevHashTable.for_boot(b"")),
        ("sev  no kernel", OVMFX64, None),
    ],
)
def test_sev_known_answers(
    vectors: Path, line: str, fixture: str, hashes: SevHashTable | None
) -> None:
    image = _fixture(vectors, fixture)
    digest = launch_digest(SevMode.SEV, image, VcpuConfig(1, 0), hashes)
    assert digest == _expected(vectors, "SEV (SHA-256", line)


@pytest.mark.parametrize(
    ("name", "mode", "vcpus", "vcpu_type", "features", "prefix"),
    [
        (
            "OVMF_CODE.fd",
            SevMode.SNP,
            1,
            "EPYC-v4",
            0x1,
            "--mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf /usr/share/OVMF/OVMF_CODE.fd ",
        ),
        (
            "OVMF_CODE.fd",
            SevMode.SNP,
            4,
            "EPYC-v4",
            0x1,
            "--mode snp --vcpus 4 --vcpu-type EPYC-v4 --ovmf",
        ),
        (
            "OVMF_CODE.fd",
            SevMode.SNP,
            1,
            "EPYC-Milan",
            0x1,
            "--mode snp --vcpus 1 --vcpu-type EPYC-Milan",
        ),
        (
            "OVMF_CODE.fd",
            SevMode.SNP,
            1,
            "EPYC-Genoa",
            0x1,
            "--mode snp --vcpus 1 --vcpu-type EPYC-Genoa",
        ),
        (
            "OVMF_CODE.fd",
            SevMode.SNP,
            1,
            "EPYC-v4",
            0x21,
            "--mode snp --vcpus 1 --vcpu-type EPYC-v4 --guest",
        ),
        ("OVMF_CODE.fd", SevMode.SEV_ES, 1, "EPYC-v4", 0, "--mode seves"),
        ("OVMF_CODE.fd", SevMode.SEV, 1, "EPYC-v4", 0, "--mode sev "),
        (
            "OVMF.fd",
            SevMode.SNP,
            1,
            "EPYC-v4",
            0x1,
            "--mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf /usr/share/ovmf",
        ),
        (
            "OVMF_CODE_4M.fd",
            SevMode.SNP,
            1,
            "EPYC-v4",
            0x1,
            "--mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf /usr/share/OVMF/OVMF_CODE_4M",
        ),
    ],
)
def test_debian_ovmf_known_answers(
    vectors: Path, name: str, mode: SevMode, vcpus: int, vcpu_type: str, features: int, prefix: str
) -> None:
    path = DEBIAN[name]
    if not path.exists():
        pytest.skip(f"{path} is not installed (Debian package ovmf)")
    image = OvmfImage.parse(path.read_bytes())
    config = VcpuConfig(vcpus, vcpu_signature(vcpu_type), features)
    expected = _expected(vectors, "Debian 12", "sev-snp-measure " + prefix)
    assert launch_digest(mode, image, config) == expected


def test_vcpu_signatures() -> None:
    assert VCPU_SIGNATURES["EPYC-v4"] == 0x00800F12
    assert VCPU_SIGNATURES["EPYC-Rome"] == 0x00830F10
    assert VCPU_SIGNATURES["EPYC-Milan"] == 0x00A00F11
    assert VCPU_SIGNATURES["EPYC-Genoa"] == 0x00A10F10
    assert VCPU_SIGNATURES["EPYC-Turin"] == 0x00B00F00
    assert cpu_signature(0xF, 0x4, 0x1) == 0xF41
    assert vcpu_signature("epyc-milan") == 0x00A00F11
    with pytest.raises(UsageError):
        vcpu_signature("Pentium")


def _synthetic(kernel_hashes: bool) -> OvmfImage:
    sections = [
        MetadataSection(0x800000, 0x3000, SectionType.SNP_SEC_MEM),
        MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
        MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
    ]
    if kernel_hashes:
        sections.append(MetadataSection(0x810000, 0x1000, SectionType.SNP_KERNEL_HASHES))
    return OvmfImage.parse(build_image(0x8000, sections=sections, sev_hash_table=None))


def test_inconsistent_requests_are_usage_errors() -> None:
    hashes = SevHashTable.for_boot(b"kernel")
    with pytest.raises(UsageError, match=r"^a kernel is given but the firmware's SEV metadata "
                       r"has no SNP_KERNEL_HASHES section$"):
        snp_launch_digest(_synthetic(False), VcpuConfig(1, EPYC_V4), hashes)
    with pytest.raises(UsageError, match=r"^the firmware has a kernel-hashes section but no SEV "
                       r"hash table entry$"):
        snp_launch_digest(_synthetic(True), VcpuConfig(1, EPYC_V4), hashes)
    with pytest.raises(UsageError, match=r"^a kernel is given but the firmware has no SEV hash "
                       r"table area$"):
        launch_digest(SevMode.SEV, _synthetic(False), VcpuConfig(1, 0), hashes)
    with pytest.raises(UsageError, match=r"^an OVMF hash can only seed an SNP launch digest$"):
        launch_digest(SevMode.SEV, _synthetic(False), VcpuConfig(1, 0), None, bytes(48))
    with pytest.raises(UsageError, match=r"^an SNP OVMF hash is 48 bytes, got 32$"):
        snp_launch_digest(_synthetic(False), VcpuConfig(1, EPYC_V4), None, bytes(32))
    with pytest.raises(UsageError, match=r"^the firmware has no SEV-ES reset block: it cannot "
                       r"boot SEV-ES/SNP guests$"):
        snp_launch_digest(OvmfImage.parse(bytes(0x1000)), VcpuConfig(1, EPYC_V4))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((0, 0), "^vCPU count 0 must be between 1 and 512$"),
        ((513, 0), "^vCPU count 513 must be between 1 and 512$"),
        ((1, -1), "^vCPU signature -0x1 is not a u32$"),
        ((1, 1 << 32), "^vCPU signature 0x100000000 is not a u32$"),
        ((1, 0, -1), "^guest features -0x1 is not a u64$"),
        ((1, 0, 1 << 64), "^guest features 0x10000000000000000 is not a u64$"),
    ],
)
def test_vcpu_config_ranges(fields: tuple[int, ...], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        VcpuConfig(*fields)


def test_vcpu_config_limits_are_accepted() -> None:
    config = VcpuConfig(512, (1 << 32) - 1, (1 << 64) - 1)
    assert (config.count, config.signature, config.guest_features) == (
        512, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF)
    assert VcpuConfig(1, 0, 0).count == 1


def test_a_reset_block_without_ap_entry_launches_one_vcpu() -> None:
    image = OvmfImage.parse(build_image(0x2000, reset_eip=0))
    assert len(vmsa_pages(image, VcpuConfig(1, EPYC_V4), 0x1)) == 1
    with pytest.raises(UsageError, match=r"^the firmware's SEV-ES reset block has no AP entry "
                       r"point$"):
        vmsa_pages(image, VcpuConfig(2, EPYC_V4), 0x1)


def test_vmsa_pages_are_the_bsp_then_one_page_per_ap() -> None:
    image = _synthetic(False)
    pages = vmsa_pages(image, VcpuConfig(3, EPYC_V4), 0x1)
    assert len(pages) == 3 and pages[1] == pages[2] != pages[0]
    assert Vmsa.from_bytes(pages[0]).registers["rip"] == 0xFFF0
    assert Vmsa.from_bytes(pages[1]).registers["rip"] == 0xB004  # the reset block's EIP 0x80B004
    assert Vmsa.from_bytes(pages[1]).segment("cs").base == 0x0080_0000


def test_the_kernel_hashes_section_must_be_one_page() -> None:
    section = MetadataSection(0x810000, 0x2000, SectionType.SNP_KERNEL_HASHES)
    image = OvmfImage.parse(build_image(0x2000, sections=[section],
                                        sev_hash_table=SevArea(0x810000, 0x400)))
    with pytest.raises(FormatError, match=r"^SNP_KERNEL_HASHES section size 0x2000 is not one "
                       r"page$"):
        kernel_hashes_page(image, section, _null_kernel(""))


@pytest.mark.parametrize("gpa", [0x810C00, 0x810C01, 0x810F4F])
def test_the_kernel_hashes_page_holds_the_table_at_its_page_offset(gpa: int) -> None:
    section = MetadataSection(0x810000, 0x1000, SectionType.SNP_KERNEL_HASHES)
    image = OvmfImage.parse(build_image(0x2000, sections=[section],
                                        sev_hash_table=SevArea(gpa, 0xB0)))
    hashes = SevHashTable.for_boot(b"kernel", b"initrd", "root=/dev/vda")
    offset = gpa & 0xFFF
    page = bytes(offset) + hashes.to_bytes() + bytes(0x1000 - offset - 0xB0)
    assert kernel_hashes_page(image, section, hashes) == page


def test_launch_digest_passes_every_snp_input(vectors: Path) -> None:
    """``launch_digest`` in SNP mode against the recorded digests: hashes and OVMF hash."""
    image = _fixture(vectors, AMDSEV)
    config = VcpuConfig(4, EPYC_V4, 0x1)
    hashes = _null_kernel("")
    expected = _expected(vectors, "SNP (SHA-384", 'snp  vcpus=4 EPYC-v4 gf=0x1  kernel=/dev/null')
    assert launch_digest(SevMode.SNP, image, config, hashes) == expected
    # The OVMF hash stands in for the pages: another image's pages with this seed agree.
    seed = _expected(vectors, "SNP (SHA-384", "snp:ovmf-hash")
    other = OvmfImage.parse(image.data.replace(b"\x00" * 16, b"\x01" * 16, 1))
    assert launch_digest(SevMode.SNP, other, config, hashes, seed) == expected


def test_every_input_changes_the_snp_digest() -> None:
    image = _synthetic(True)
    base = VcpuConfig(2, EPYC_V4, 0x1)
    digests = {
        snp_launch_digest(image, base),
        snp_launch_digest(image, VcpuConfig(3, EPYC_V4, 0x1)),
        snp_launch_digest(image, VcpuConfig(2, 0x00A00F11, 0x1)),
        snp_launch_digest(image, VcpuConfig(2, EPYC_V4, 0x21)),
        snp_launch_digest(image, VcpuConfig(2, EPYC_V4, 0x1, VmmType.EC2)),
    }
    assert len(digests) == 5
