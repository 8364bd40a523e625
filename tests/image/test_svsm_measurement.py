"""``snp:svsm`` launch-digest prediction (QEMU + COCONUT-SVSM) against the known answers of
vectors/snp/expected_digests.txt, through the library and through ``cvm measure``.

The expected digests are read from that file (section "SNP + COCONUT-SVSM"), so a wrong
prediction fails here; the fixtures are sev-snp-measure's ``svsm.bin`` and ``svsm_ovmf.fd``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.errors import UsageError
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.vmsa import VmmType, Vmsa
from cvm.image.measurement import VcpuConfig
from cvm.image.svsm_measurement import (
    SvsmImage,
    build_svsm_image,
    svsm_end_gpa,
    svsm_initial_vmsa,
    svsm_launch_digest,
    svsm_vmsa_pages,
)

EPYC_V4 = 0x00800F12
VARS_SIZE = 540672
SECTION = "SNP + COCONUT-SVSM"


def _fixtures(vectors: Path) -> Path:
    return vectors / "snp" / "sev-snp-measure" / "tests" / "fixtures"


def _svsm_lines(vectors: Path) -> dict[int, bytes]:
    """vCPU count -> expected digest, for every snp:svsm line of expected_digests.txt."""
    text = (vectors / "snp" / "expected_digests.txt").read_text()
    chunks = [c for c in text.split("\n## ") if c.startswith(SECTION)]
    assert len(chunks) == 1
    found = {}
    for line in chunks[0].splitlines():
        if line.startswith("snp:svsm"):
            assert "EPYC-v4" in line
            vcpus = int(line.split("vcpus=")[1].split()[0])
            found[vcpus] = bytes.fromhex(line.split()[-1])
    assert len(found) >= 2
    return found


@pytest.fixture(scope="module")
def real(vectors: Path) -> tuple[OvmfImage, SvsmImage]:
    folder = _fixtures(vectors)
    ovmf = OvmfImage.parse((folder / "svsm_ovmf.fd").read_bytes())
    end = svsm_end_gpa(ovmf, VARS_SIZE)
    return ovmf, SvsmImage.parse((folder / "svsm.bin").read_bytes(), end_gpa=end)


def test_every_svsm_known_answer(vectors: Path, real: tuple[OvmfImage, SvsmImage]) -> None:
    ovmf, svsm = real
    for vcpus, expected in _svsm_lines(vectors).items():
        assert svsm_launch_digest(ovmf, svsm, VcpuConfig(vcpus, EPYC_V4)) == expected


def test_fixture_layout(real: tuple[OvmfImage, SvsmImage]) -> None:
    ovmf, svsm = real
    assert svsm.gpa + svsm.image.size == ovmf.gpa - VARS_SIZE
    assert svsm.entry_point == svsm.gpa  # the fixture's SVSM info offset is 0
    kinds = [section.type for section in svsm.sections]
    assert kinds == [SectionType.SNP_SEC_MEM, SectionType.SNP_SECRETS, SectionType.CPUID]


def test_initial_vmsa_is_flat_32_bit(real: tuple[OvmfImage, SvsmImage]) -> None:
    _, svsm = real
    pages = svsm_vmsa_pages(svsm, VcpuConfig(3, EPYC_V4))
    assert len(pages) == 3 and len(set(pages)) == 1
    vmsa = Vmsa.from_bytes(pages[0])
    assert vmsa.registers["rip"] == svsm.entry_point
    assert vmsa.registers["cr0"] == 0x11 and vmsa.registers["sev_features"] == 0x1
    assert vmsa.registers["rdx"] == EPYC_V4 and vmsa.registers["x87_fcw"] == 0
    cs, ds = vmsa.segment("cs"), vmsa.segment("ds")
    assert (cs.selector, cs.attrib, cs.limit, cs.base) == (8, 0xC9B, 0xFFFF_FFFF, 0)
    assert (ds.selector, ds.attrib, ds.limit) == (16, 0xC93, 0xFFFF_FFFF)
    assert vmsa.segment("gs").attrib == 0x93


def _measure(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = execute(["measure", *args])
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def test_cli_known_answers(
    vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _fixtures(vectors)
    common = ["--mode", "snp:svsm", "--ovmf", str(folder / "svsm_ovmf.fd")]
    common += ["--svsm", str(folder / "svsm.bin"), "--vcpu-type", "EPYC-v4"]
    for vcpus, expected in _svsm_lines(vectors).items():
        code, out, _ = _measure([*common, "--vcpus", str(vcpus), "--vars-size", "540672"], capsys)
        assert code == 0 and out == expected.hex()
    vars_file = tmp_path / "OVMF_VARS.fd"
    vars_file.write_bytes(bytes(VARS_SIZE))
    dump = tmp_path / "vmsas"
    args = [*common, "--vcpus", "2", "--vars-file", str(vars_file), "--json"]
    code, out, _ = _measure([*args, "--dump-vmsa", str(dump)], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["measurement"] == _svsm_lines(vectors)[2].hex()
    assert report["vars_size"] == VARS_SIZE and report["svsm_entry"] == report["svsm_gpa"]
    assert sorted(p.name for p in dump.iterdir()) == ["vmsa0.bin", "vmsa1.bin"]
    assert Vmsa.from_bytes((dump / "vmsa1.bin").read_bytes()).registers["cr0"] == 0x11


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --vars-size and --vars-file"),
        (["--vars-size", "4096", "--guest-features", "0x21"], "fixes SEV_FEATURES"),
        (["--vars-size", "4096", "--vmm-type", "ec2"], "only modelled for QEMU"),
        (["--vars-size", "4096", "--kernel", "/dev/null"], "no kernel hashes"),
        (["--vars-size", "100"], "not a multiple of 4 KiB"),
        (["--vars-size", "4096", "--snp-ovmf-hash", "00"], "does not apply"),
    ],
)
def test_cli_refuses_inconsistent_requests(
    vectors: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    folder = _fixtures(vectors)
    args = ["--mode", "snp:svsm", "--ovmf", str(folder / "svsm_ovmf.fd"), "--vcpus", "1"]
    args += ["--vcpu-type", "EPYC-v4", "--svsm", str(folder / "svsm.bin"), *extra]
    code, _, err = _measure(args, capsys)
    assert code != 0 and message in err and "Traceback" not in err


def test_cli_svsm_options_need_svsm_mode(
    vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _fixtures(vectors)
    ovmf = str(folder / "svsm_ovmf.fd")
    code, _, err = _measure(["--mode", "snp:svsm", "--ovmf", ovmf, "--vars-size", "0"], capsys)
    assert code != 0 and "needs --svsm" in err
    args = ["--mode", "snp", "--ovmf", ovmf, "--vcpus", "1", "--vcpu-type", "EPYC-v4"]
    code, _, err = _measure([*args, "--vars-size", "4096"], capsys)
    assert code != 0 and "belong to --mode snp:svsm" in err


SYNTHETIC_SECTIONS = (
    MetadataSection(0x0, 0x4000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x4000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x5000, 0x1000, SectionType.CPUID),
    MetadataSection(0x6000, 0x1000, SectionType.SVSM_CAA),
)


def _synthetic(
    *, size: int = 0x8000, entry: int = 0x1000, seed: bytes = b"svsm", vars_size: int = 0x4000
) -> tuple[OvmfImage, SvsmImage]:
    ovmf = OvmfImage.parse(build_image(0x10000, seed=b"ovmf for svsm"))
    data = build_svsm_image(size, entry_offset=entry, sections=SYNTHETIC_SECTIONS, seed=seed)
    return ovmf, SvsmImage.parse(data, end_gpa=svsm_end_gpa(ovmf, vars_size))


def test_synthetic_image_parses_back() -> None:
    ovmf, svsm = _synthetic()
    assert svsm.sections == SYNTHETIC_SECTIONS
    assert svsm.gpa == ovmf.gpa - 0x4000 - 0x8000
    assert svsm.entry_point == svsm.gpa + 0x1000
    bare = build_svsm_image(0x2000, seed=b"bare")
    assert SvsmImage.parse(bare, end_gpa=0x10000).sections == ()


def test_every_input_changes_the_svsm_digest() -> None:
    ovmf, svsm = _synthetic()
    base = VcpuConfig(2, EPYC_V4)
    digests = {
        svsm_launch_digest(ovmf, svsm, base),
        svsm_launch_digest(ovmf, svsm, VcpuConfig(3, EPYC_V4)),
        svsm_launch_digest(ovmf, svsm, VcpuConfig(2, 0x00A00F11)),
        svsm_launch_digest(*_synthetic(entry=0x2000), base),
        svsm_launch_digest(*_synthetic(seed=b"other"), base),
        svsm_launch_digest(*_synthetic(vars_size=0x5000), base),
        svsm_launch_digest(*_synthetic(size=0x9000), base),
    }
    assert len(digests) == 7
    assert svsm_initial_vmsa(0x1000, EPYC_V4) != svsm_initial_vmsa(0x2000, EPYC_V4)


def test_inconsistent_layouts_are_usage_errors() -> None:
    ovmf = OvmfImage.parse(build_image(0x10000, seed=b"ovmf for svsm"))
    with pytest.raises(UsageError):  # no SVSM info entry
        SvsmImage.parse(build_image(0x2000, seed=b"no info"), end_gpa=ovmf.gpa)
    with pytest.raises(UsageError):
        svsm_end_gpa(ovmf, 0x800)
    with pytest.raises(UsageError):
        svsm_end_gpa(ovmf, ovmf.gpa + 0x1000)
    with pytest.raises(UsageError):  # would start below 0
        SvsmImage.parse(build_svsm_image(0x2000), end_gpa=0x1000)
    with pytest.raises(UsageError):
        build_svsm_image(0x2000, entry_offset=0x2000)
    with pytest.raises(UsageError):
        build_svsm_image(0x1800)
    _, svsm = _synthetic()
    with pytest.raises(UsageError, match=r"^an SVSM launch is only modelled for QEMU "
                       r"\(--vmm-type qemu\)$"):
        svsm_launch_digest(ovmf, svsm, VcpuConfig(1, EPYC_V4, 0x1, VmmType.GCE))
    with pytest.raises(UsageError, match=r"^an SVSM launch fixes SEV_FEATURES at 0x1; guest "
                       r"features 0x21 do not apply$"):
        svsm_launch_digest(ovmf, svsm, VcpuConfig(1, EPYC_V4, 0x21))
