"""``cvm vm run IMAGE``: the host launches the VM of an image bundle, the guest boots it and
runs its workload; prints the chain of trust (or ``--json``).

Exit status: 0 when every stage verified, the PCRs equal the prediction and the replayed event
log, the root opened and the workload's data round-tripped; the refusing error's own code when a
stage refused (e.g. 67 the relying party refused the report, 68 the vTPM refused to unseal);
with ``--kbs URL`` the relying party is a key broker (the SVSM attests to it through the host,
docs/kbs.md "Booting through the broker"; 67 when it refuses, 70 when it cannot be reached);
1 when the boot ran to the end but a check said no (a PCR differs from the prediction).

``--backend qemu`` runs a ``cvm image build --target qemu`` image in the real QEMU + OVMF +
swtpm (:mod:`cvm.host.qemu`) on the TPM of ``--tpm-state DIR`` (``cvm vm tpm-setup DIR`` makes
one and prints its SRK, which the owner seals to): 0 when the initramfs unsealed the key and
opened the root, 68 when the TPM refused to unseal (its error in the message), 1 when the key
was unsealed but the root did not open, 70 when the boot did not finish. With ``--mode
sev-snp`` it composes the SEV-SNP command line (ID block and ID auth over the predicted launch
digest of ``--firmware``); ``--dry-run`` prints it; without SEV-SNP hardware it does not run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer

from cvm.cli.options import refuse_unused
from cvm.errors import UsageError

app = typer.Typer(help="Run confidential VMs from image bundles.", no_args_is_help=True)
SIZE = re.compile(r"^(\d+)([KMG]?)i?B?$", re.IGNORECASE)
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
DEFAULT_MEMORY_TEXT = "2M"
DEFAULT_KBS_RESOURCE = "default/vtpm/state-key"


def parse_size(text: str) -> int:
    """``2M``, ``4096K``, ``1G`` or bytes."""
    match = SIZE.match(text.strip())
    if match is None:
        raise UsageError(f"--memory: {text!r} is not a size like 2M or 1G")
    return int(match.group(1)) * UNITS[match.group(2).upper()]


def run_mode(backend: str, mode: str | None, *, vcpus: int | None, memory: str,
             tpm_state: Path | None, firmware: Path | None, id_key: Path | None,
             author_key: Path | None, dry_run: bool, kbs: str | None, kbs_resource: str) -> str:
    """The mode ``backend`` runs (``--mode``, else sev-snp on cvm's emulated machine and plain
    on QEMU), after refusing every option that backend and mode would not read: a user who
    gave one believed it would act."""
    default_resource = kbs_resource == DEFAULT_KBS_RESOURCE
    if backend == "qemu":
        if kbs is not None:
            raise UsageError("--kbs: the emulated backend's SVSM attests; not with --backend qemu")
        snp = mode == "sev-snp"
        refuse_unused(f"--backend qemu --mode {mode or 'plain'}", {
            "--memory": memory != DEFAULT_MEMORY_TEXT, "--kbs-resource": not default_resource,
            "--vcpus": not snp and vcpus is not None,
            "--tpm-state": snp and tpm_state is not None,
            "--firmware": not snp and firmware is not None,
            "--id-key": not snp and id_key is not None,
            "--author-key": not snp and author_key is not None})
        return mode or "plain"
    if backend != "emulated":
        raise UsageError(f"--backend {backend!r}: emulated or qemu")
    refuse_unused("--backend emulated", {
        "--tpm-state": tpm_state is not None, "--firmware": firmware is not None,
        "--id-key": id_key is not None, "--author-key": author_key is not None,
        "--dry-run": dry_run})
    if kbs is None and not default_resource:
        raise UsageError("--kbs-resource: only with --kbs")
    return mode or "sev-snp"


def image_vcpus(image: Path) -> int:
    """The vCPUs the image's launch digest was predicted for (``cvm image build --vcpus``, the
    manifest's ``vcpus``): what ``vm run`` launches unless ``--vcpus`` says otherwise, as a
    different count changes the launch digest. 1 when the manifest does not say; a manifest that
    does not parse is named by the boot's own loader."""
    try:
        value = json.loads((image / "image.json").read_bytes()).get("vcpus", 1)
    except (ValueError, AttributeError):
        return 1
    return value if type(value) is int and 1 <= value <= 64 else 1


def boot(image: Path, mode: str, *, vcpus: int | None, memory: str, kbs: str | None,
         kbs_resource: str) -> Any:
    """Boot the bundle ``image`` on cvm's emulated machine; with ``kbs``, the relying party is
    that broker, which trusts this installation's emulated AMD root (``--trust emulated``)."""
    from cvm.guest.run import boot_bundle
    from cvm.hardware.vm import Mode

    if not (image / "image.json").is_file():
        raise UsageError(f"{image}: not an image bundle (no image.json)")
    vendor = None
    if kbs is not None:
        from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore

        vendor = RootStore.for_workspace(DEFAULT_WORKSPACE).vendor("Milan", create=True)
    if vcpus is None:
        vcpus = image_vcpus(image)
    return boot_bundle(image, Mode.parse(mode), vcpus=vcpus, memory_bytes=parse_size(memory),
                       kbs=kbs, kbs_resource=kbs_resource, vendor=vendor)


def refusal_line(trace: Any) -> str | None:
    """The one error line of a boot a stage refused (None when none refused)."""
    if trace.refused is None:
        return None
    stage, error = trace.refused
    return f"cvm: error: {stage}: {error}"


def shows_trace(trace: Any, as_json: bool) -> bool:
    """Whether ``run`` prints the trace: always as JSON; as text unless the boot was refused for
    what the user asked (a UsageError: a vCPU count, a memory size or a mode the image was not
    built for), where nothing ran and the one error line says it all."""
    return as_json or trace.refused is None or not isinstance(trace.refused[1], UsageError)


def exit_code(trace: Any) -> int:
    """The refusing error's own code when a stage refused; else 0 when every check passed, 1
    when the boot ran to the end but a check said no."""
    if trace.refused is not None:
        return int(trace.refused[1].exit_code)
    return 0 if trace.ok else 1


@app.command("run")
def run(
    image: Path = typer.Argument(..., help="The image bundle folder (cvm image build OUT)."),
    mode: str = typer.Option(None, "--mode",
                             help="plain, sev, sev-es or sev-snp (default: sev-snp; plain with "
                                  "--backend qemu)."),
    vcpus: int = typer.Option(None, "--vcpus",
                              help="vCPUs (the launch digest depends on it; default: the count "
                                   "the image was built for, else 1)."),
    memory: str = typer.Option(DEFAULT_MEMORY_TEXT, "--memory",
                               help="Guest RAM, e.g. 2M, 64M."),
    as_json: bool = typer.Option(False, "--json", help="The trace as JSON."),
    backend: str = typer.Option("emulated", "--backend", help="emulated or qemu."),
    tpm_state: Path = typer.Option(None, "--tpm-state",
                                   help="qemu: the swtpm state folder (cvm vm tpm-setup)."),
    firmware: Path = typer.Option(None, "--firmware",
                                  help="qemu sev-snp: the SNP-capable OVMF (-bios)."),
    id_key: Path = typer.Option(None, "--id-key", help="qemu sev-snp: ID key (P-384 PEM)."),
    author_key: Path = typer.Option(None, "--author-key",
                                    help="qemu sev-snp: author key (P-384 PEM)."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="qemu: print the command line, do not run it."),
    kbs: str = typer.Option(None, "--kbs",
                            help="sev-snp: the SVSM obtains the vTPM state key from this key "
                                 "broker (http://HOST:PORT; cvm image register first)."),
    kbs_resource: str = typer.Option(DEFAULT_KBS_RESOURCE, "--kbs-resource",
                                     help="With --kbs: the state key's REPOSITORY/vtpm/TAG."),
) -> int:
    """Launch IMAGE, boot it, unseal its root, run its workload; print the chain of trust."""
    chosen = run_mode(backend, mode, vcpus=vcpus, memory=memory, tpm_state=tpm_state,
                      firmware=firmware, id_key=id_key, author_key=author_key, dry_run=dry_run,
                      kbs=kbs, kbs_resource=kbs_resource)
    if backend == "qemu":
        from cvm.cli.vm_qemu import run_qemu

        return run_qemu(image, chosen, 1 if vcpus is None else vcpus, tpm_state, firmware,
                        id_key, author_key, dry_run, as_json)
    trace = boot(image, chosen, vcpus=vcpus, memory=memory, kbs=kbs, kbs_resource=kbs_resource)
    if as_json:
        typer.echo(json.dumps(trace.to_json(), indent=1))
    elif shows_trace(trace, as_json):
        typer.echo(trace.render())
    line = refusal_line(trace)
    if line is not None:
        typer.echo(line, err=True)
    return exit_code(trace)


@app.command("tpm-setup")
def tpm_setup(state: Path = typer.Argument(..., help="A new, empty folder for the TPM's state.")
              ) -> None:
    """Make a TPM (swtpm state) for --backend qemu; write its SRK public part to STATE/srk.pub."""
    from cvm.host.qemu import tpm_setup as setup

    setup(state)
    typer.echo(f"TPM state in {state}; its storage root key: {state / 'srk.pub'} "
               "(give it to cvm image build --srk-public)")
