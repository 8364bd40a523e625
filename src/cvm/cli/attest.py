"""``cvm attest``: produce evidence in an emulated CVM, appraise it (dry run), fetch secrets.

``evidence`` launches an emulated SEV-SNP guest (PSP, SVSM with the vTPM, measured boot of a
signed UKI) and writes the KBS Attestation payload (runtime data + ``cvm-evidence/1``) for a
nonce; with ``--reference-out`` it also writes the owner's ``cvm-reference/1`` document for
that image. ``appraise`` runs the verifier's three steps with no server and prints the verdict,
every finding and what the reference values leave unchecked; ``collateral add|show`` fills and
lists its offline collateral cache (:mod:`cvm.cli.attest_collateral`). ``fetch`` speaks
Trustee's RCAR protocol to a ``cvm kbs serve`` from an emulated CVM and prints the released
secret.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cvm.cli.attest_collateral import app as collateral_app
from cvm.cli.options import given_time, parse_file, reading, refuse_unused
from cvm.errors import FormatError, UsageError
from cvm.files import write_output

app = typer.Typer(help="Attestation: evidence, appraisal (dry run), fetching secrets.",
                  no_args_is_help=True)
app.add_typer(collateral_app, name="collateral")
EXIT_NOT_AUTHENTIC, EXIT_REFUSED = 66, 67
UKI_NAME, VARSTORE_NAME, REFERENCE_NAME, FIRMWARE_NAME = (
    "uki.efi", "OVMF_VARS.fd", "reference.json", "firmware.fd")


def _owner(directory: Path | None) -> Any:
    """The emulated owner: a fresh signed image, or the one ``cvm attest owner`` wrote; its
    guests' chips come from this installation's emulated AMD root (made once, then pinned)."""
    from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
    from cvm.formats.uefi.varstore import Varstore
    from cvm.scenarios.attested_guest import OwnerImage, emulated_owner

    root = RootStore.for_workspace(DEFAULT_WORKSPACE).root("Milan", create=True)
    if directory is None:
        return emulated_owner(datetime.now(UTC), root=root)
    uki = directory / UKI_NAME
    image = OwnerImage(uki.read_bytes(),
                       parse_file(directory / VARSTORE_NAME, "--owner", Varstore.parse), {})
    with reading(uki, "--owner"):
        return emulated_owner(datetime.now(UTC), image=image, root=root)


@app.command()
def owner(
    out: Annotated[Path, typer.Argument(help="Folder for the owner's image and reference.")],
) -> None:
    """Build an owner's signed image (UKI, varstore, firmware) and its reference values."""
    from cvm.scenarios.attested_guest import reference_json

    built = _owner(None)
    out.mkdir(parents=True, exist_ok=True)
    write_output(out / UKI_NAME, built.image.uki)
    write_output(out / VARSTORE_NAME, built.image.varstore.to_bytes())
    write_output(out / FIRMWARE_NAME, built.firmware)
    write_output(out / REFERENCE_NAME,
                 (json.dumps(reference_json(built), indent=1) + "\n").encode())
    typer.echo(f"owner image and {REFERENCE_NAME} written to {out}")


@app.command()
def evidence(
    nonce: Annotated[str, typer.Option(help="The verifier's challenge (KBS nonce).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Attestation payload (JSON).")],
    reference_out: Annotated[Path | None, typer.Option(
        help="Also write the owner's cvm-reference/1 document.")] = None,
    firmware_out: Annotated[Path | None, typer.Option(
        help="Also write the firmware image (to explain launch-digest mismatches).")] = None,
    key_out: Annotated[Path | None, typer.Option(
        help="Also write the TEE private key (JWK) the broker wraps secrets to.")] = None,
    vcpus: Annotated[int, typer.Option(help="vCPUs the host launches the guest with.")] = 1,
    old_tcb: Annotated[bool, typer.Option(help="Run on a PSP with an old TCB.")] = False,
    chip: Annotated[int, typer.Option(help="Which emulated chip (index).")] = 0,
    owner_dir: Annotated[Path | None, typer.Option(
        "--owner", help="Boot the image `cvm attest owner` wrote (default: a fresh one).")] = None,
) -> None:
    """Launch an emulated CVM and write its evidence for NONCE."""
    from cvm.formats.kbs.rcar import Attestation
    from cvm.scenarios.attested_guest import CURRENT_TCB, OLD_TCB, reference_json

    owner = _owner(owner_dir)
    cvm = owner.launch(chip, OLD_TCB if old_tcb else CURRENT_TCB, vcpus=vcpus)
    payload = Attestation(nonce, cvm.tee_key.public_jwk(), cvm.evidence(nonce))
    write_output(out, (json.dumps(payload.to_json(), indent=1) + "\n").encode())
    if reference_out is not None:
        write_output(reference_out,
                     (json.dumps(reference_json(owner), indent=1) + "\n").encode())
    if firmware_out is not None:
        write_output(firmware_out, owner.firmware)
    if key_out is not None:
        write_output(key_out, (json.dumps(cvm.tee_key.private_jwk()) + "\n").encode(),
                     secret=True)
    typer.echo(f"evidence for nonce {nonce!r} written to {out}")


def _roots(trust: str) -> Any:
    """AMD's real roots, or this installation's own emulated roots by their pinned
    fingerprints (``cvm report emulated-root``): what ``cvm attest evidence`` signs with."""
    from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
    from cvm.attestation.verifier.trust import TrustRoots

    if trust == "amd":
        return TrustRoots.amd()
    if trust == "emulated":
        return TrustRoots.of(RootStore.for_workspace(DEFAULT_WORKSPACE).trust_anchors(),
                             "emulated")
    raise UsageError(f"--trust must be amd or emulated, not {trust!r}")


def verdict_lines(verdict: Any) -> list[str]:
    """The verdict as the CLI prints it: status, findings, what was not checked."""
    status = verdict.status + ("" if verdict.accepted else f" (refused at {verdict.step})")
    lines = [f"verdict: {status}"]
    for finding in verdict.findings:
        lines.append(f"  {finding.claim}: expected {finding.expected}, got {finding.actual}")
        if finding.hint:
            lines.append(f"    input: {finding.hint}")
    lines.append("not checked: " + (", ".join(verdict.unchecked) or "nothing"))
    return lines


def explainer_options_unused(firmware: Path | None, vcpus: int, vcpu_type: str) -> None:
    """Refuse ``--vcpus``/``--vcpu-type`` without ``--firmware``: they shape only the launch
    explainer, so given alone they would be silently ignored."""
    if firmware is None:
        refuse_unused("an appraisal without --firmware", {
            "--vcpus": vcpus != 1, "--vcpu-type": vcpu_type != "EPYC-Milan"})


def appraisal(evidence_file: Path, reference: Path, *, policy: Path | None = None,
              nonce: str | None = None, trust: str = "amd", now: str | None = None,
              firmware: Path | None = None, vcpus: int = 1, vcpu_type: str = "EPYC-Milan",
              collateral: Path | None = None) -> Any:
    """The verdict ``cvm attest appraise`` prints: every check on, freshness against ``nonce``
    (None: not checked, and the verdict's ``unchecked`` says so), the chain to ``trust``'s
    roots, the reference values and the Rego policy (the built-in one unless ``policy``)."""
    from dataclasses import replace

    from cvm.attestation.verifier.collateral import evidence_crl
    from cvm.attestation.verifier.composite import appraise as run_appraisal
    from cvm.attestation.verifier.launch_appraisal import appraise_launch
    from cvm.attestation.verifier.reference import ReferenceDocument
    from cvm.attestation.verifier.rego_policy import DEFAULT_POLICY, RegoPolicy
    from cvm.formats.kbs.json_fields import load_object
    from cvm.formats.kbs.launch_evidence import LaunchEvidence
    from cvm.formats.kbs.rcar import Attestation

    explainer_options_unused(firmware, vcpus, vcpu_type)
    payload = parse_file(evidence_file, "", lambda data: Attestation.from_json(
        load_object(data, str(evidence_file))))
    document = parse_file(reference, "--reference", ReferenceDocument.from_bytes)
    rego = (parse_file(policy, "--policy", lambda data: RegoPolicy(policy_text(data), policy.name))
            if policy else RegoPolicy(DEFAULT_POLICY))
    found = payload.evidence
    roots, moment = _roots(trust), given_time("--now", now)
    if collateral is not None and found.crl is None:  # the CRL of the evidence's product
        found = replace(found, crl=evidence_crl(collateral, found.ark, roots))
    explain = None
    if firmware is not None:
        from cvm.attestation.launch_search import launch_explainer
        from cvm.image.measurement import VcpuConfig
        from cvm.image.vcpu_types import vcpu_signature

        config = VcpuConfig(vcpus, vcpu_signature(vcpu_type))
        explain = parse_file(firmware, "--firmware", lambda data: launch_explainer(data, config))
    if isinstance(found, LaunchEvidence):  # an SVSM's report alone (cvm-launch-evidence/1)
        return appraise_launch(found, document, rego, roots, moment,
                               runtime_nonce=payload.nonce, tee_pubkey=payload.tee_pubkey,
                               challenge=nonce, explain_launch=explain)
    return run_appraisal(found, document, rego, roots, moment,
                         runtime_nonce=payload.nonce, tee_pubkey=payload.tee_pubkey,
                         challenge=nonce, explain_launch=explain)


def policy_text(data: bytes) -> str:
    """A Rego policy file's text (UTF-8, as OPA reads it)."""
    try:
        return data.decode()
    except UnicodeDecodeError as error:
        raise FormatError(f"not UTF-8 text (byte {error.start})") from None


def verdict_json(verdict: Any) -> dict[str, Any]:
    """The verdict as ``--json`` prints it."""
    return {"status": verdict.status, "step": verdict.step,
            "findings": verdict.findings_json(), "unchecked": list(verdict.unchecked),
            "claims": verdict.claims}


def exit_code(verdict: Any) -> int:
    """0 accepted; 66 the evidence is not authentic (refused at verify or replay); 67 it is
    authentic but not acceptable (refused by the reference values or the policy)."""
    if verdict.accepted:
        return 0
    return EXIT_NOT_AUTHENTIC if verdict.step in ("verify", "replay") else EXIT_REFUSED


def appraise(
    evidence_file: Annotated[Path, typer.Argument(
        metavar="EVIDENCE", help="Attestation payload (from `cvm attest evidence`).")],
    reference: Annotated[Path, typer.Option(help="cvm-reference/1 document.")],
    policy: Annotated[Path | None, typer.Option(help="Rego policy (default: built in).")] = None,
    nonce: Annotated[str | None, typer.Option(
        help="The challenge issued; without it freshness is not checked.")] = None,
    trust: Annotated[str, typer.Option(
        help="Trusted roots: amd (AMD's real roots), or emulated (this installation's emulated "
             "AMD, which signs `cvm attest evidence`: opt in by name).")] = "amd",
    now: Annotated[str | None, typer.Option(help="Appraise at this ISO 8601 time.")] = None,
    firmware: Annotated[Path | None, typer.Option(
        help="Firmware image: explain a launch-digest mismatch by nearby configurations.")] = None,
    vcpus: Annotated[int, typer.Option(help="The expected vCPU count (with --firmware).")] = 1,
    vcpu_type: Annotated[str, typer.Option(
        help="The expected vCPU type (with --firmware).")] = "EPYC-Milan",
    collateral: Annotated[Path | None, typer.Option(
        help="Collateral cache: the CRL of the evidence's product is taken from it when the "
             "evidence has none (a cache without it is refused).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Verify, replay and validate EVIDENCE; exit 0 if accepted, 66 not authentic, 67 refused."""
    verdict = appraisal(evidence_file, reference, policy=policy, nonce=nonce, trust=trust,
                        now=now, firmware=firmware, vcpus=vcpus, vcpu_type=vcpu_type,
                        collateral=collateral)
    if as_json:
        typer.echo(json.dumps(verdict_json(verdict), indent=2))
    else:
        for line in verdict_lines(verdict):
            typer.echo(line)
    code = exit_code(verdict)
    if code:
        raise typer.Exit(code)


app.command("appraise")(appraise)  # not decorated: the command's own lines are mutation-tested


def _resource_path(text: str) -> str:
    parts = text.strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise UsageError(f"--resource {text!r} is not REPOSITORY/TYPE/TAG")
    return "/".join(parts)


@app.command()
def fetch(
    url: Annotated[str, typer.Argument(help="The broker, e.g. http://127.0.0.1:8080")],
    resource: Annotated[str, typer.Option(help="REPOSITORY/TYPE/TAG")],
    out: Annotated[Path | None, typer.Option("--out", "-o",
                                             help="Write the secret here.")] = None,
    vcpus: Annotated[int, typer.Option(help="vCPUs the host launches the guest with.")] = 1,
    old_tcb: Annotated[bool, typer.Option(help="Run on a PSP with an old TCB.")] = False,
    owner_dir: Annotated[Path | None, typer.Option(
        "--owner", help="Boot the image `cvm attest owner` wrote (default: a fresh one).")] = None,
) -> None:
    """From an emulated CVM: auth, attest, and get RESOURCE as a JWE only it can open."""
    from cvm.attestation.kbs.client import KbsClient
    from cvm.scenarios.attested_guest import CURRENT_TCB, OLD_TCB

    path = _resource_path(resource)
    owner = _owner(owner_dir)
    cvm = owner.launch(0, OLD_TCB if old_tcb else CURRENT_TCB, vcpus=vcpus)
    with KbsClient(url) as client:
        client.attest(cvm)
        secret = client.resource(path, cvm.tee_key)
    if out is not None:
        write_output(out, secret, secret=True)
        typer.echo(f"{len(secret)} bytes written to {out}")
    else:
        sys.stdout.buffer.write(secret)
