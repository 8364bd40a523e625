"""``cvm measure``: predict the launch digest of an OVMF launch (SEV, SEV-ES, SEV-SNP).

The digest is the one the AMD Secure Processor computes when a QEMU (or EC2/GCE) host launches
the firmware with the given vCPUs and, for measured direct boot, kernel, initrd and command
line; it is what an SNP report carries in MEASUREMENT. ``--mode snp:ovmf-hash`` prints the SNP
digest after the firmware pages alone, which ``--snp-ovmf-hash`` can later seed. ``--mode
snp:svsm`` predicts a QEMU launch under an SVSM at VMPL0: ``--svsm`` names the SVSM image and
``--vars-size`` (or ``--vars-file``) the OVMF variable store that sits between the two.
"""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path
from typing import Annotated

import typer

from cvm.cli.options import parse_file, reading, refuse_unused
from cvm.errors import FormatError, UsageError
from cvm.files import write_output
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.snp.sev_hashes import SevHashTable
from cvm.formats.snp.vmsa import VmmType
from cvm.image.measurement import (
    DEFAULT_GUEST_FEATURES,
    SevMode,
    VcpuConfig,
    launch_digest,
    snp_ovmf_digest,
    vmsa_pages,
)
from cvm.image.svsm_measurement import (
    SvsmImage,
    svsm_end_gpa,
    svsm_launch_digest,
    svsm_vmsa_pages,
)
from cvm.image.vcpu_types import VCPU_SIGNATURES, vcpu_signature

OVMF_HASH_MODE = "snp:ovmf-hash"
SVSM_MODE = "snp:svsm"
MODE_NAMES = {
    "snp": SevMode.SNP,
    "sev-es": SevMode.SEV_ES,
    "seves": SevMode.SEV_ES,
    "sev": SevMode.SEV,
}

app = typer.Typer(
    help="Predict the launch digest (MEASUREMENT) of an OVMF launch.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a number (use 0x... for hex)") from None


def _hashes(kernel: Path | None, initrd: Path | None, append: str | None) -> SevHashTable | None:
    if kernel is None:
        if initrd is not None or append is not None:
            raise UsageError("--initrd and --append need --kernel")
        return None
    return SevHashTable.for_boot(
        kernel.read_bytes(), initrd.read_bytes() if initrd else None, append
    )


def _vcpus(
    vcpus: int | None, vcpu_type: str | None, vcpu_sig: str | None, features: int, vmm: VmmType
) -> VcpuConfig:
    if vcpus is None:
        raise UsageError("--vcpus is required in this mode")
    if vcpu_sig is not None:
        signature = _int(vcpu_sig, "--vcpu-sig")
    elif vcpu_type is not None:
        signature = vcpu_signature(vcpu_type)
    elif vmm is VmmType.QEMU:
        raise UsageError(f"--vcpu-type is required; known: {', '.join(VCPU_SIGNATURES)}")
    else:
        signature = 0  # EC2 and GCE put a fixed value in RDX
    return VcpuConfig(vcpus, signature, features, vmm)


def _vars_size(vars_size: str | None, vars_file: Path | None) -> int:
    if (vars_size is None) == (vars_file is None):
        raise UsageError(f"--mode {SVSM_MODE} needs exactly one of --vars-size and --vars-file")
    if vars_file is not None:
        if vars_file.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory, not a variable store",
                                    str(vars_file))
        return vars_file.stat().st_size
    assert vars_size is not None
    return _int(vars_size, "--vars-size")


def _dump(folder: Path, pages: list[bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, page in enumerate(pages):
        write_output(folder / f"vmsa{index}.bin", page)


@app.callback(invoke_without_command=True)
def measure(
    *,
    mode: Annotated[
        str, typer.Option("--mode", help="snp, sev-es, sev, snp:ovmf-hash or snp:svsm.")
    ],
    ovmf: Annotated[Path, typer.Option("--ovmf", help="The OVMF firmware image (.fd).")],
    kernel: Annotated[
        Path | None, typer.Option("--kernel", help="Kernel for measured direct boot.")
    ] = None,
    initrd: Annotated[Path | None, typer.Option("--initrd", help="Initrd (with --kernel).")] = None,
    append: Annotated[str | None, typer.Option("--append", help="Kernel command line.")] = None,
    vcpus: Annotated[
        int | None, typer.Option("--vcpus", help="Number of vCPUs (snp, sev-es).")
    ] = None,
    vcpu_type: Annotated[
        str | None, typer.Option("--vcpu-type", help="QEMU vCPU model, e.g. EPYC-v4.")
    ] = None,
    vcpu_sig: Annotated[
        str | None, typer.Option("--vcpu-sig", help="CPUID(1).EAX instead of a type.")
    ] = None,
    guest_features: Annotated[
        str, typer.Option("--guest-features", help="VMSA SEV_FEATURES (snp).")
    ] = hex(DEFAULT_GUEST_FEATURES),
    vmm_type: Annotated[str, typer.Option("--vmm-type", help="qemu, ec2 or gce.")] = "qemu",
    snp_ovmf_hash: Annotated[
        str | None,
        typer.Option(
            "--snp-ovmf-hash", help="Precomputed snp:ovmf-hash (hex) to seed an snp digest."
        ),
    ] = None,
    dump_vmsa: Annotated[
        Path | None,
        typer.Option("--dump-vmsa", help="Write each measured VMSA to DIR/vmsa<N>.bin."),
    ] = None,
    svsm: Annotated[
        Path | None, typer.Option("--svsm", help="The SVSM image (snp:svsm).")
    ] = None,
    vars_size: Annotated[
        str | None,
        typer.Option("--vars-size", help="Bytes of the OVMF variable store (snp:svsm)."),
    ] = None,
    vars_file: Annotated[
        Path | None,
        typer.Option("--vars-file", help="The OVMF variable store, for its size (snp:svsm)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the expected launch digest in hex."""
    report = measurement_report(
        mode=mode, ovmf=ovmf, kernel=kernel, initrd=initrd, append=append, vcpus=vcpus,
        vcpu_type=vcpu_type, vcpu_sig=vcpu_sig, guest_features=guest_features,
        vmm_type=vmm_type, snp_ovmf_hash=snp_ovmf_hash, dump_vmsa=dump_vmsa, svsm=svsm,
        vars_size=vars_size, vars_file=vars_file)
    typer.echo(json.dumps(report, indent=2) if as_json else str(report["measurement"]))


def parse_vmm(vmm_type: str) -> VmmType:
    """``--vmm-type``: qemu, ec2 or gce, in any case."""
    try:
        return VmmType(vmm_type.lower())
    except ValueError:
        raise UsageError(f"unknown --vmm-type {vmm_type!r}; use qemu, ec2 or gce") from None


def ovmf_hash_options_unused(mode: str, kernel: Path | None, initrd: Path | None,
                             append: str | None, vcpus: int | None, vcpu_type: str | None,
                             vcpu_sig: str | None, snp_ovmf_hash: str | None,
                             dump_vmsa: Path | None) -> None:
    """``--mode snp:ovmf-hash`` measures the firmware's pages alone: refuse every option of a
    launch's kernel hashes, vCPUs and VMSAs, which it would not read."""
    if mode == OVMF_HASH_MODE:
        refuse_unused(f"--mode {OVMF_HASH_MODE}", {
            "--kernel": kernel is not None, "--initrd": initrd is not None,
            "--append": append is not None, "--vcpus": vcpus is not None,
            "--vcpu-type": vcpu_type is not None, "--vcpu-sig": vcpu_sig is not None,
            "--snp-ovmf-hash": snp_ovmf_hash is not None, "--dump-vmsa": dump_vmsa is not None})


def measurement_report(*, mode: str, ovmf: Path, kernel: Path | None, initrd: Path | None,
                       append: str | None, vcpus: int | None, vcpu_type: str | None,
                       vcpu_sig: str | None, guest_features: str, vmm_type: str,
                       snp_ovmf_hash: str | None, dump_vmsa: Path | None, svsm: Path | None,
                       vars_size: str | None, vars_file: Path | None) -> dict[str, object]:
    """The launch digest of ``mode`` (``measurement``, in hex) and what it was computed from;
    each option the mode does not read refused."""
    vmm = parse_vmm(vmm_type)
    image = parse_file(ovmf, "--ovmf", OvmfImage.parse)
    features = _int(guest_features, "--guest-features")
    report: dict[str, object] = {
        "mode": mode,
        "ovmf": str(ovmf),
        "ovmf_sha256": hashlib.sha256(image.data).hexdigest(),
    }
    if mode != SVSM_MODE and (svsm, vars_size, vars_file) != (None, None, None):
        raise UsageError(f"--svsm, --vars-size and --vars-file belong to --mode {SVSM_MODE}")
    ovmf_hash_options_unused(mode, kernel, initrd, append, vcpus, vcpu_type, vcpu_sig,
                             snp_ovmf_hash, dump_vmsa)
    if mode == OVMF_HASH_MODE:
        with reading(ovmf, "--ovmf"):
            digest = snp_ovmf_digest(image)
    elif mode == SVSM_MODE:
        if kernel is not None or initrd is not None or append is not None:
            raise UsageError(f"--mode {SVSM_MODE} measures no kernel hashes")
        if snp_ovmf_hash is not None:
            raise UsageError(f"--snp-ovmf-hash does not apply to --mode {SVSM_MODE}")
        size = _vars_size(vars_size, vars_file)
        if svsm is None:
            raise UsageError(f"--mode {SVSM_MODE} needs --svsm")
        end = svsm_end_gpa(image, size)
        svsm_image = parse_file(svsm, "--svsm", lambda data: SvsmImage.parse(data, end_gpa=end))
        config = _vcpus(vcpus, vcpu_type, vcpu_sig, features, vmm)
        digest = svsm_launch_digest(image, svsm_image, config)
        report.update(
            svsm=str(svsm),
            svsm_sha256=hashlib.sha256(svsm_image.image.data).hexdigest(),
            svsm_gpa=f"{svsm_image.gpa:#x}",
            svsm_entry=f"{svsm_image.entry_point:#x}",
            vars_size=size,
            vcpus=config.count,
            vcpu_signature=f"{config.signature:#010x}",
            vmm_type=vmm.value,
        )
        if dump_vmsa is not None:
            _dump(dump_vmsa, svsm_vmsa_pages(svsm_image, config))
    elif mode in MODE_NAMES:
        sev_mode = MODE_NAMES[mode]
        hashes = _hashes(kernel, initrd, append)
        seed = None
        if snp_ovmf_hash is not None:
            try:
                seed = bytes.fromhex(snp_ovmf_hash)
            except ValueError:
                raise FormatError("--snp-ovmf-hash is not hex") from None
        if sev_mode is SevMode.SEV:
            config = VcpuConfig(1, 0, 0, vmm)
        else:
            config = _vcpus(vcpus, vcpu_type, vcpu_sig, features, vmm)
            report.update(
                vcpus=config.count,
                vcpu_signature=f"{config.signature:#010x}",
                guest_features=f"{config.guest_features:#x}" if sev_mode is SevMode.SNP else "0x0",
                vmm_type=vmm.value,
            )
        with reading(ovmf, "--ovmf"):  # what the firmware lacks for this launch
            digest = launch_digest(sev_mode, image, config, hashes, seed)
        if dump_vmsa is not None and sev_mode is not SevMode.SEV:
            features = config.guest_features if sev_mode is SevMode.SNP else 0
            _dump(dump_vmsa, vmsa_pages(image, config, features))
        if hashes is not None:
            report["kernel_hashes"] = {
                "kernel": hashes.kernel.hex(),
                "initrd": hashes.initrd.hex(),
                "cmdline": hashes.cmdline.hex(),
            }
    else:
        raise UsageError(
            f"unknown --mode {mode!r}; use snp, sev-es, sev, {OVMF_HASH_MODE} or {SVSM_MODE}"
        )
    report["measurement"] = digest.hex()
    return report
