"""``cvm measure --mode snp:svsm`` against the real ``sev-snp-measure`` (PyPI, the test oracle).

Inputs: sev-snp-measure's own COCONUT-SVSM fixtures, and synthetic SVSM images laid out by
:func:`cvm.image.svsm_measurement.build_svsm_image` (several sizes, entry offsets and section
lists) beside a synthetic OVMF from :func:`cvm.formats.ovmf.image.build_image`, for several
vCPU counts and types and variable-store sizes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

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
Measure = Callable[[list[str]], str]


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
    measure_ours: Measure,
    measure_theirs: Measure,
    images: dict[str, Path],
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
    theirs = measure_theirs([*args, *sized])
    ours = measure_ours([*args, *sized])
    assert len(ours) == 96
    assert ours == theirs


def test_dumped_vmsas_equal_sev_snp_measure(
    oracle: str, measure_ours: Measure, images: dict[str, Path], tmp_path: Path
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
    measure_ours([*args, "--dump-vmsa", str(tmp_path / "ours")])
    for name in ("vmsa0.bin", "vmsa1.bin"):
        assert (tmp_path / "ours" / name).read_bytes() == (theirs_dir / name).read_bytes()
