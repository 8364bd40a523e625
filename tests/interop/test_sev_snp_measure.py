"""``cvm measure`` against the real ``sev-snp-measure`` (PyPI, the test oracle) on real and
synthetic OVMF builds, for every mode, several vCPU counts and types, VMMs and guest features.

Real builds: Debian's ``ovmf`` package (``/usr/share/OVMF``, ``/usr/share/ovmf``). Synthetic
builds are laid out by :func:`cvm.formats.ovmf.image.build_image` with an AmdSev-style section
list including SNP_KERNEL_HASHES and the SEV hash table entry, so measured direct boot is
exercised too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.formats.ovmf.image import build_image
from cvm.formats.ovmf.sev_area import SevArea
from cvm.formats.ovmf.sev_metadata import MetadataSection

pytestmark = pytest.mark.interop

DEBIAN = [
    Path("/usr/share/OVMF/OVMF_CODE.fd"),
    Path("/usr/share/ovmf/OVMF.fd"),
    Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),
]
ORACLE_VMM = {"qemu": "QEMU", "ec2": "ec2", "gce": "gce"}
Measure = Callable[[list[str]], str]


@pytest.fixture(scope="module")
def images(
    tmp_path_factory: pytest.TempPathFactory, amdsev_sections: tuple[MetadataSection, ...]
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ovmf")
    found = {path.name: path for path in DEBIAN if path.exists()}
    if not found:
        pytest.fail("Debian's ovmf package is missing; .ci/run installs it")
    builds = {
        "amdsev-kernel-hashes.fd": build_image(
            0x40000,
            sections=amdsev_sections,
            sev_hash_table=SevArea(0x810C00, 0x400),
            sev_secret_area=SevArea(0x810000, 0xC00),
            seed=b"amdsev",
        ),
        "hash-table-at-page-start.fd": build_image(
            0x20000,
            reset_eip=0x0080C000,
            sections=amdsev_sections[2:6],
            sev_hash_table=SevArea(0x810000, 0x400),
            seed=b"start",
        ),
        "hash-table-at-odd-offset.fd": build_image(
            0x20000,
            sections=amdsev_sections[2:6],
            sev_hash_table=SevArea(0x810F47, 0xB0),
            seed=b"odd",
        ),
        "no-metadata.fd": build_image(0x10000, seed=b"plain"),
    }
    for name, data in builds.items():
        (folder / name).write_bytes(data)
        found[name] = folder / name
    kernel = folder / "vmlinuz"
    kernel.write_bytes(bytes(range(256)) * 300)
    initrd = folder / "initrd.img"
    initrd.write_bytes(b"initramfs" * 1000)
    found["kernel"], found["initrd"] = kernel, initrd
    return found


CASES = [
    # (image, mode, vcpus, vcpu type, guest features, vmm, direct boot)
    ("OVMF_CODE.fd", "snp", 1, "EPYC-v4", "0x1", "qemu", False),
    ("OVMF_CODE.fd", "snp", 2, "EPYC-Milan", "0x1", "qemu", False),
    ("OVMF_CODE.fd", "snp", 4, "EPYC-Genoa", "0x21", "qemu", False),
    ("OVMF_CODE.fd", "snp", 3, "EPYC-Rome", "0x1", "ec2", False),
    ("OVMF_CODE.fd", "snp", 2, "EPYC-Turin", "0x1", "gce", False),
    ("OVMF_CODE.fd", "seves", 1, "EPYC-v4", "0x1", "qemu", False),
    ("OVMF_CODE.fd", "seves", 3, "EPYC-Milan", "0x1", "qemu", False),
    ("OVMF_CODE.fd", "sev", 1, "EPYC-v4", "0x1", "qemu", False),
    ("OVMF_CODE.fd", "snp:ovmf-hash", 1, "EPYC-v4", "0x1", "qemu", False),
    ("OVMF.fd", "snp", 2, "EPYC-Milan-v2", "0x1", "qemu", False),
    ("OVMF_CODE_4M.fd", "snp", 1, "EPYC-v4", "0x1", "qemu", False),
    ("amdsev-kernel-hashes.fd", "snp", 1, "EPYC-v4", "0x1", "qemu", True),
    ("amdsev-kernel-hashes.fd", "snp", 4, "EPYC-Genoa", "0x21", "qemu", True),
    ("amdsev-kernel-hashes.fd", "snp", 2, "EPYC-Milan", "0x1", "ec2", True),
    ("amdsev-kernel-hashes.fd", "snp", 2, "EPYC-Milan", "0x1", "gce", True),
    ("amdsev-kernel-hashes.fd", "snp", 1, "EPYC-v4", "0x1", "qemu", False),
    ("amdsev-kernel-hashes.fd", "seves", 2, "EPYC-Rome", "0x1", "qemu", True),
    ("amdsev-kernel-hashes.fd", "sev", 1, "EPYC-v4", "0x1", "qemu", True),
    ("amdsev-kernel-hashes.fd", "snp:ovmf-hash", 1, "EPYC-v4", "0x1", "qemu", False),
    ("hash-table-at-page-start.fd", "snp", 2, "EPYC-Turin", "0x1", "qemu", True),
    ("hash-table-at-odd-offset.fd", "snp", 1, "EPYC-Milan", "0x1", "qemu", True),
    ("hash-table-at-odd-offset.fd", "snp", 3, "EPYC-v4", "0x21", "ec2", True),
    ("no-metadata.fd", "snp", 2, "EPYC-v4", "0x1", "qemu", False),
    ("no-metadata.fd", "seves", 1, "EPYC-v4", "0x1", "qemu", False),
]


@pytest.mark.parametrize(("image", "mode", "vcpus", "vcpu_type", "features", "vmm", "boot"), CASES)
def test_digest_equals_sev_snp_measure(
    measure_ours: Measure,
    measure_theirs: Measure,
    images: dict[str, Path],
    image: str,
    mode: str,
    vcpus: int,
    vcpu_type: str,
    features: str,
    vmm: str,
    boot: bool,
) -> None:
    if image not in images:
        pytest.skip(f"{image} is not installed")
    common = ["--ovmf", str(images[image])]
    if mode not in {"sev", "snp:ovmf-hash"}:
        common += ["--vcpus", str(vcpus), "--vcpu-type", vcpu_type, "--guest-features", features]
    if boot:
        common += ["--kernel", str(images["kernel"]), "--initrd", str(images["initrd"])]
        common += ["--append", "console=ttyS0 root=/dev/vda1 ro"]
    theirs = measure_theirs(["--mode", mode, *common, "--vmm-type", ORACLE_VMM[vmm]])
    ours = measure_ours(
        ["--mode", "sev-es" if mode == "seves" else mode, *common, "--vmm-type", vmm]
    )
    assert len(ours) in (64, 96)
    assert ours == theirs


def test_ovmf_hash_seeding_equals_sev_snp_measure(
    measure_ours: Measure, measure_theirs: Measure, images: dict[str, Path]
) -> None:
    path = str(images["amdsev-kernel-hashes.fd"])
    seed = measure_theirs(["--mode", "snp:ovmf-hash", "--ovmf", path])
    common = ["--ovmf", path, "--vcpus", "2", "--vcpu-type", "EPYC-v4", "--snp-ovmf-hash", seed]
    theirs = measure_theirs(["--mode", "snp", *common])
    assert measure_ours(["--mode", "snp", *common]) == theirs


def test_kernel_without_hashes_section_fails_in_both(
    oracle: str, images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    if "OVMF_CODE.fd" not in images:
        pytest.skip("OVMF_CODE.fd is not installed")
    args = ["--mode", "snp", "--ovmf", str(images["OVMF_CODE.fd"]), "--vcpus", "1"]
    args += ["--vcpu-type", "EPYC-v4", "--kernel", str(images["kernel"])]
    done = subprocess.run([oracle, *args], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert execute(["measure", *args]) == 64
    assert "SNP_KERNEL_HASHES" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("image", "vcpus", "boot"),
    [("OVMF_CODE.fd", 2, False), ("amdsev-kernel-hashes.fd", 3, True)],
)
def test_emulated_psp_digest_equals_sev_snp_measure(
    measure_theirs: Measure, images: dict[str, Path], image: str, vcpus: int, boot: bool
) -> None:
    """The digest the emulated PSP computes when the host launches the image."""
    if image not in images:
        pytest.skip(f"{image} is not installed")
    from cvm.amd.kds import ChipFuses
    from cvm.formats.snp.sev_hashes import SevHashTable
    from cvm.hardware.machine import Machine
    from cvm.hardware.psp.firmware import SecureProcessor
    from cvm.host.launch import SnpLaunchConfig, launch_snp
    from cvm.host.vmm import Hypervisor

    cmdline = "console=ttyS0"
    hashes = None
    args = ["--mode", "snp", "--ovmf", str(images[image]), "--vcpus", str(vcpus)]
    args += ["--vcpu-type", "EPYC-Milan"]
    if boot:
        kernel, initrd = images["kernel"].read_bytes(), images["initrd"].read_bytes()
        hashes = SevHashTable.for_boot(kernel, initrd, cmdline)
        args += ["--kernel", str(images["kernel"]), "--initrd", str(images["initrd"])]
        args += ["--append", cmdline]
    machine = Machine(8 << 30)
    psp = SecureProcessor(machine, ChipFuses("Milan", b"\x01" * 64, b"\x02" * 64))
    config = SnpLaunchConfig(vcpus=vcpus, vcpu_signature=0x00A00F11, hashes=hashes)
    launched = launch_snp(Hypervisor(machine), psp, images[image].read_bytes(), config)
    assert launched.measurement.hex() == measure_theirs(args)
