"""``cvm vm run IMAGE --backend qemu``: the real QEMU run, and the SEV-SNP command line.

The owner's side (the launch digest, the signed ID block) is computed here, with the owner's
tools; the host side (:mod:`cvm.host.qemu`) only composes and runs command lines.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import typer

from cvm.errors import ExternalToolError, StatusError, UsageError
from cvm.host.qemu import QemuImage, run_image, snp_argv

DEFAULT_SNP_FIRMWARE = Path("/usr/share/ovmf/OVMF.fd")
SEV_DEVICE = Path("/dev/sev")
TPM_RC_POLICY_FAIL = 0x99D
DEFAULT_VCPU_TYPE = "EPYC-Milan"


def snp_command(image: QemuImage, firmware: Path, vcpus: int, id_key: Path | None,
                author_key: Path | None) -> list[str]:
    """The SEV-SNP command line: the ID block names the launch digest predicted for
    ``firmware`` on ``vcpus`` EPYC-Milan vCPUs, signed by the ID key, endorsed by the author
    key (each a new key when not given)."""
    from cvm.crypto import amd_ecdsa
    from cvm.formats.ovmf.image import OvmfImage
    from cvm.host.launch import DEFAULT_POLICY
    from cvm.image.firmware import vcpu_config
    from cvm.image.measurement import SevMode, launch_digest
    from cvm.image.snp_id import sign_id_block

    try:
        data = firmware.read_bytes()
    except OSError:
        raise UsageError(f"--firmware: cannot read {firmware}") from None
    keys = []
    for option, path in (("--id-key", id_key), ("--author-key", author_key)):
        if path is None:
            keys.append(amd_ecdsa.generate_private_key())
            continue
        try:
            keys.append(amd_ecdsa.private_key_from_pem(path.read_bytes()))
        except OSError:
            raise UsageError(f"{option}: cannot read {path}") from None
    digest = launch_digest(SevMode.SNP, OvmfImage.parse(data),
                           vcpu_config(vcpus, DEFAULT_VCPU_TYPE))
    block, auth = sign_id_block(digest, DEFAULT_POLICY, keys[0], keys[1])
    return snp_argv(image, firmware, block, auth, vcpus, DEFAULT_POLICY, cpu=DEFAULT_VCPU_TYPE)


def run_qemu(image_dir: Path, mode: str, vcpus: int, tpm_state: Path | None,
             firmware: Path | None, id_key: Path | None, author_key: Path | None,
             dry_run: bool, as_json: bool) -> int:
    image = QemuImage.load(image_dir)
    if mode == "sev-snp":
        argv = snp_command(image, firmware or DEFAULT_SNP_FIRMWARE, vcpus, id_key, author_key)
        if dry_run:
            typer.echo(shlex.join(argv))
            return 0
        if not SEV_DEVICE.exists():
            raise ExternalToolError(f"no SEV-SNP hardware here ({SEV_DEVICE} is missing); "
                                    "--dry-run prints the command line")
        return os.spawnvp(os.P_WAIT, argv[0], argv)
    if mode != "plain":
        raise UsageError(f"--mode {mode!r}: the qemu backend runs plain or sev-snp")
    if dry_run:
        from cvm.host.qemu import qemu_argv

        typer.echo(shlex.join(qemu_argv(image, Path("VARS.fd"), Path("SWTPM.sock"),
                                        Path("SERIAL.log"))))
        return 0
    if tpm_state is None:
        raise UsageError("give --tpm-state DIR: the TPM the image was sealed to "
                         "(cvm vm tpm-setup DIR makes one)")
    report = run_image(image, tpm_state)
    if as_json:
        typer.echo(json.dumps({"outcome": report.outcome, "detail": report.detail,
                               "pcrs_sha256": {str(k): v for k, v in report.pcrs.items()}},
                              indent=1))
    else:
        typer.echo(f"{image_dir}: {report.outcome}: {report.detail}")
        for pcr, value in sorted(report.pcrs.items()):
            typer.echo(f"  PCR {pcr:>2} sha256 {value}")
    if report.outcome == "opened":
        return 0
    if report.outcome == "refused":
        code = re.search(r"\((0x[0-9A-Fa-f]+)\)", report.detail)
        raise StatusError(f"the TPM refused to unseal the root's key: {report.detail}",
                          int(code.group(1), 16) if code else TPM_RC_POLICY_FAIL)
    if report.outcome == "open-failed":
        typer.echo("cvm: error: the key was unsealed but the root did not open", err=True)
        return 1
    raise ExternalToolError(f"the boot did not finish: {report.detail}")

