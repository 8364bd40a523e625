"""``cvm measure --mode snp:svsm`` against the real ``sev-snp-measure`` (PyPI, the test oracle).

Inputs: sev-snp-measure's own COCONUT-SVSM fixtures, and synthetic SVSM images laid out by
:func:`cvm.image.svsm_measurement.build_svsm_image` (several sizes, entry offsets and section
lists) beside a synthetic OVMF from :func:`cvm.formats.ovmf.image.build_image`, for several
vCPU counts and types and variable-store sizes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.formats.ovmf.image import build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.image.svsm_measurement import build_svsm_image

pytestmark = pytest.mark.interop

COCONUT_LIKE = (
    MetadataSection(0x0, 0x9E000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x9E000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x9F000, 0x1000, SectionType.CPUID),
)
WITH_CAA = (
    MetadataSection(0x10000, 0x3000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x13000, 0x1000, SectionType.SVSM_CAA),
    MetadataSection(0x14000, 0x1000, SectionType.CPUID),
    MetadataSection(0x15000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x16000, 0x2000, SectionType.SNP_SEC_MEM),
)


@pytest.fixture(scope="module")
def oracle(require_tool: Callable[[str], str]) -> str:
    beside = Path(sys.executable).parent / "sev-snp-measure"
    return str(beside) if beside.exists() else require_tool("sev-snp-measure")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, vectors: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("svsm")
    fixtures = vectors / "snp" / "sev-snp-measure" / "tests" / "fixtures"
    builds = {
        "ovmf.fd": build_image(0x20000, seed=b"ovmf under an svsm"),
        "coconut-like.bin": build_svsm_image(0x40000, sections=COCONUT_LIKE, seed=b"coconut"),
        "entry-inside.bin": build_svsm_image(
            0x18000, entry_offset=0x3000, sections=WITH_CAA, seed=b"entry"
        ),
        "no-metadata.bin": build_svsm_image(0x3000, entry_offset=0x1000, seed=b"bare"),
    }
    found = {name: folder / name for name in builds}
    for name, data in builds.items():
        found[name].write_bytes(data)
    found["real-ovmf"] = fixtures / "svsm_ovmf.fd"
    found["real-svsm"] = fixtures / "svsm.bin"
    return found


def _ours(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = execute(["measure", *args])
    out = capsys.readouterr().out.strip()
    assert code == 0, out
    return out


def _theirs(oracle: str, args: list[str]) -> str:
    done = subprocess.run([oracle, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


CASES = [
    # (ovmf, svsm, vcpus, vcpu type, vars size)
    ("real-ovmf", "real-svsm", 1, "EPYC-Milan", 540672),
    ("real-ovmf", "real-svsm", 3, "EPYC-Genoa", 0x20000),
    ("ovmf.fd", "coconut-like.bin", 1, "EPYC-v4", 0x84000),
    ("ovmf.fd", "coconut-like.bin", 4, "EPYC-Milan", 0x84000),
    ("ovmf.fd", "entry-inside.bin", 2, "EPYC-Rome", 0x1000),
    ("ovmf.fd", "entry-inside.bin", 8, "EPYC-Turin", 0),
    ("ovmf.fd", "no-metadata.bin", 2, "EPYC-v4", 0x40000),
]


@pytest.mark.parametrize(("ovmf", "svsm", "vcpus", "vcpu_type", "vars_size"), CASES)
def test_svsm_digest_equals_sev_snp_measure(
    oracle: str,
    images: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    ovmf: str,
    svsm: str,
    vcpus: int,
    vcpu_type: str,
    vars_size: int,
) -> None:
    args = ["--mode", "snp:svsm", "--ovmf", str(images[ovmf]), "--svsm", str(images[svsm])]
    args += ["--vcpus", str(vcpus), "--vcpu-type", vcpu_type]
    # sev-snp-measure reads a zero --vars-size as "not given"; a file of that size is exact.
    if vars_size:
        sized = ["--vars-size", str(vars_size)]
    else:
        empty = images["ovmf.fd"].with_name("empty-vars.fd")
        empty.write_bytes(b"")
        sized = ["--vars-file", str(empty)]
    theirs = _theirs(oracle, [*args, *sized])
    ours = _ours([*args, *sized], capsys)
    assert len(ours) == 96
    assert ours == theirs


def test_dumped_vmsas_equal_sev_snp_measure(
    oracle: str, images: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["--mode", "snp:svsm", "--ovmf", str(images["ovmf.fd"])]
    args += ["--svsm", str(images["entry-inside.bin"]), "--vcpus", "2"]
    args += ["--vcpu-type", "EPYC-Milan", "--vars-size", "4096"]
    theirs_dir = tmp_path / "theirs"
    theirs_dir.mkdir()
    done = subprocess.run(
        [oracle, *args, "--dump-vmsa"], capture_output=True, text=True, check=False, cwd=theirs_dir
    )
    assert done.returncode == 0, done.stderr
    _ours([*args, "--dump-vmsa", str(tmp_path / "ours")], capsys)
    for name in ("vmsa0.bin", "vmsa1.bin"):
        assert (tmp_path / "ours" / name).read_bytes() == (theirs_dir / name).read_bytes()
