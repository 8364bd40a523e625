"""``cvm report``: show and verify SEV-SNP attestation reports (AMD 56860 Table 22).

``verify`` checks the ARK -> ASK -> VCEK chain, the binding of the VCEK to the report's chip
and TCB, and the report signature; reference values given as options are then validated, and
what none of them checks is said. Like the library (and go-sev-guest's defaults), it refuses
debug guests and guests that allow a migration agent unless the user allows them by name.
``--trust amd`` (the default) accepts only AMD's real roots, pinned by SHA-256; ``--trust
emulated`` accepts only the emulated roots this installation made (``emulated-root``), pinned
by the fingerprints in its data directory — never both at once.

``--collateral DIR`` verifies a bare report (as ``snpguest report`` writes it) offline from the
cache ``cvm attest collateral add`` fills: the VCEK of the report's CHIP_ID at its
REPORTED_TCB, the cert_chain and the CRL of the VCEK's product. What the options give wins
over the cache (``--vcek``, ``--chain``, ``--certs``, ``--cert-table``, ``--crl``); the cache
supplies the rest. A missing entry is one line naming it and the KDS path it is fetched from
(exit 74); a missing CRL is refused unless ``--allow-no-crl``, and what was verified without
a CRL says that revocation was not checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cvm.amd.product import product_named
from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.attestation.verifier import (
    Evidence,
    ReferenceValues,
    TrustRoots,
    VerifiedReport,
    Verifier,
    unchecked,
)
from cvm.cli.options import given_time, parse_file, reading, refuse_unused
from cvm.crypto.x509_chain import load_certificates, parse_crl
from cvm.errors import ChainError, Finding, FormatError, PolicyError, UsageError
from cvm.formats.snp.attestation_report import REPORT_SIZE, AttestationReport
from cvm.formats.snp.tcb_version import TcbVersion

app = typer.Typer(help="Show and verify SEV-SNP attestation reports.", no_args_is_help=True)


class Trust(StrEnum):
    amd = "amd"
    emulated = "emulated"


def read_report(path: Path) -> bytes:
    """A report file: 0x4A0 raw bytes, or the same as hex text (whitespace ignored)."""
    data = path.read_bytes()
    if len(data) == REPORT_SIZE:
        return data
    try:
        decoded = bytes.fromhex(data.decode("ascii").replace("\n", "").replace(" ", ""))
    except (UnicodeDecodeError, ValueError):
        raise FormatError(f"{path}: not a {REPORT_SIZE}-byte report (nor its hex)") from None
    if len(decoded) != REPORT_SIZE:
        raise FormatError(f"{path}: {len(decoded)} bytes, an SNP report has {REPORT_SIZE}")
    return decoded


def parse_report(path: Path) -> AttestationReport:
    """The report in the file ``path`` (:func:`read_report`), parsed; what is wrong with it
    named with the file."""
    data = read_report(path)
    with reading(path):
        return AttestationReport.from_bytes(data)


def checked_bytes(path: Path, option: str, parse: Callable[[bytes], object]) -> bytes:
    """The bytes of the file ``option`` names once ``parse`` takes them, what is wrong named
    with the option and the file; the verifier parses them again and checks them."""
    return parse_file(path, option, lambda data: (parse(data), data)[1])


def _describe(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


@app.command()
def show(
    file: Annotated[Path, typer.Argument(help="Report: 1184 raw bytes or hex text.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Decode a report and print every field."""
    report = parse_report(file)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    for line in show_lines(report):
        typer.echo(line)


def show_lines(report: AttestationReport) -> list[str]:
    """Every field of the report, in the report's order: bytes in hex, the rest as text."""
    return [f"{name:20} {_describe(getattr(report, name))}" for name in report.to_json()]


def _find(directory: Path, stem: str) -> Path:
    for candidate in sorted(directory.iterdir()):
        suffix = candidate.suffix.lower()
        if candidate.stem.lower() == stem and suffix in {".pem", ".der", ".crt", ".cer"}:
            return candidate
    raise UsageError(f"{directory}: no {stem}.pem or {stem}.der")


def _load_one(path: Path) -> bytes:
    return parse_file(path, "--certs", load_certificates)[0].der


def _evidence(
    report: bytes,
    certs: Path | None,
    vcek: Path | None,
    chain: Path | None,
    crl: Path | None,
    cert_table: Path | None,
) -> Evidence:
    crl_bytes = checked_bytes(crl, "--crl", parse_crl) if crl else None
    if sum(1 for given in (certs, vcek or chain, cert_table) if given) > 1:
        raise UsageError("give one of --certs DIR, --vcek F --chain F, or --cert-table F")
    if cert_table is not None:
        return parse_file(cert_table, "--cert-table",
                          lambda table: Evidence.from_cert_table(report, table, crl_bytes))
    if certs is not None:
        return Evidence(
            report,
            _load_one(_find(certs, "vcek")),
            _load_one(_find(certs, "ask")),
            _load_one(_find(certs, "ark")),
            crl_bytes,
        )
    if vcek is None or chain is None:
        raise UsageError("give --certs DIR, --cert-table FILE, or both --vcek and --chain")
    vcek_bytes = checked_bytes(vcek, "--vcek", load_certificates)

    def with_chain(data: bytes) -> Evidence:
        load_certificates(data)
        return Evidence.from_cert_chain(report, vcek_bytes, data, crl_bytes)

    return parse_file(chain, "--chain", with_chain)


def collateral_evidence(
    report: bytes, parsed: AttestationReport, directory: Path, sources: dict[str, Path | None],
    roots: TrustRoots, allow_no_crl: bool,
) -> Evidence:
    """The evidence of ``report`` with what ``sources`` (the options) do not give taken from
    the collateral cache ``directory``: the VCEK of the report's chip and TCB, the cert_chain
    of its product, the CRL of the product of its ARK (required unless ``allow_no_crl``)."""
    from dataclasses import replace

    from cvm.attestation.verifier.collateral import evidence_crl
    from cvm.attestation.verifier.collateral_certificates import (
        cached_chain,
        report_vcek,
        vcek_product,
    )

    certs, vcek, chain, crl = (sources[name] for name in ("certs", "vcek", "chain", "crl"))
    cert_table = sources["cert_table"]
    if certs is not None or cert_table is not None:
        evidence = _evidence(report, certs, vcek, chain, crl, cert_table)
    else:
        crl_bytes = checked_bytes(crl, "--crl", parse_crl) if crl else None
        if vcek is None:
            vcek_bytes = report_vcek(directory, parsed)
            product = vcek_product(vcek_bytes)
        else:
            vcek_bytes = checked_bytes(vcek, "--vcek", load_certificates)
            product = parse_file(vcek, "--vcek", vcek_product)
        if chain is None:  # two certificates (cached_chain checks): the verifier checks them
            evidence = Evidence.from_cert_chain(report, vcek_bytes,
                                                cached_chain(directory, product, roots), crl_bytes)
        else:
            evidence = parse_file(chain, "--chain", lambda data: Evidence.from_cert_chain(
                report, vcek_bytes, (load_certificates(data), data)[1], crl_bytes))
    if crl is None:
        evidence = replace(evidence, crl=evidence_crl(directory, evidence.ark, roots,
                                                      required=not allow_no_crl))
    return evidence


def _roots(trust: Trust, workspace: str) -> TrustRoots:
    if trust is Trust.amd:
        return TrustRoots.amd()
    # Only this installation's own emulated roots, by the fingerprints it pinned.
    return TrustRoots.of(RootStore.for_workspace(workspace).trust_anchors(), "emulated")


# Reference values given in hex, and the exact size of their report field (AMD 56860 Table 22).
HEX_SIZES = {
    "measurement": 48, "report_data": 64, "host_data": 32, "id_key_digest": 48,
    "author_key_digest": 48, "family_id": 16, "image_id": 16, "chip_id": 64,
}
VMPL_COUNT = 4
U64_LIMIT = 1 << 64


def hex_value(value: str | None, name: str) -> bytes | None:
    """``--name`` as bytes: hex of exactly the report field's size, else a usage error."""
    if value is None:
        return None
    option = "--" + name.replace("_", "-")
    try:
        decoded = bytes.fromhex(value)
    except ValueError:
        raise UsageError(f"{option}: not hex") from None
    size = HEX_SIZES[name]
    if len(decoded) != size:
        raise UsageError(f"{option}: {len(decoded)} bytes of hex, the field has {size}")
    return decoded


def _reference(
    hexes: dict[str, str | None], vmpl: int | None, min_tcb: str | None,
    min_guest_svn: int | None, allow_debug: bool, allow_migration_agent: bool,
) -> ReferenceValues:
    minimum = None
    if min_tcb is not None:
        try:
            number = int(min_tcb, 0)
        except ValueError:
            raise UsageError("--min-tcb: not an integer") from None
        if not 0 <= number < U64_LIMIT:
            raise UsageError("--min-tcb: not a 64-bit TCB_VERSION")
        minimum = TcbVersion.from_int(number)
    if vmpl is not None and not 0 <= vmpl < VMPL_COUNT:
        raise UsageError(f"--vmpl: {vmpl} is not a VMPL (0 to {VMPL_COUNT - 1})")
    if min_guest_svn is not None and not 0 <= min_guest_svn < 1 << 32:
        raise UsageError("--min-guest-svn: not a 32-bit SVN")
    values = {name: hex_value(hexes.get(name), name) for name in HEX_SIZES}
    return ReferenceValues(
        measurement=values["measurement"],
        report_data=values["report_data"],
        host_data=values["host_data"],
        family_id=values["family_id"],
        image_id=values["image_id"],
        id_key_digest=values["id_key_digest"],
        author_key_digest=values["author_key_digest"],
        chip_id=values["chip_id"],
        vmpl=vmpl,
        minimum_tcb=minimum,
        minimum_guest_svn=min_guest_svn,
        allow_debug=allow_debug,
        allow_migration_agent=allow_migration_agent,
    )


NO_REVOCATION = "not checked: revocation (no CRL given or cached: the ASK may be revoked)"
REFUSE_DEBUG_GONE = (
    "--refuse-debug is gone: debug guests are refused by default; "
    "--allow-debug accepts them"
)


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="Report: 1184 raw bytes or hex text.")],
    certs: Annotated[Path | None, typer.Option(help="Dir with ark, ask, vcek .pem/.der.")] = None,
    vcek: Annotated[Path | None, typer.Option(help="VCEK certificate (DER or PEM).")] = None,
    chain: Annotated[Path | None, typer.Option(help="KDS cert_chain (PEM: ASK then ARK).")] = None,
    cert_table: Annotated[
        Path | None, typer.Option(help="Extended-report certificate table (GHCB).")
    ] = None,
    crl: Annotated[Path | None, typer.Option(help="The ARK's CRL (DER or PEM).")] = None,
    collateral: Annotated[Path | None, typer.Option(
        help="Collateral cache (cvm attest collateral add): the VCEK, chain and CRL the other "
             "options do not give.")] = None,
    allow_no_crl: Annotated[bool, typer.Option(
        "--allow-no-crl", help="With --collateral: verify without revocation when the cache "
                               "has no CRL of the product.")] = False,
    product: Annotated[str | None, typer.Option(help="Milan, Genoa or Turin.")] = None,
    trust: Annotated[Trust, typer.Option(help="Roots to trust.")] = Trust.amd,
    workspace: Annotated[str, typer.Option(
        help="With --trust emulated: whose emulated roots (see 'report emulated-root').")
    ] = DEFAULT_WORKSPACE,
    measurement: Annotated[str | None, typer.Option(help="Expected MEASUREMENT (48 bytes hex).")]
    = None,
    report_data: Annotated[str | None, typer.Option(help="Expected REPORT_DATA (64 bytes hex).")]
    = None,
    host_data: Annotated[str | None, typer.Option(help="Expected HOST_DATA (32 bytes hex).")]
    = None,
    id_key_digest: Annotated[str | None, typer.Option(
        help="Expected ID_KEY_DIGEST (48 bytes hex).")] = None,
    author_key_digest: Annotated[str | None, typer.Option(
        help="Expected AUTHOR_KEY_DIGEST (48 bytes hex).")] = None,
    family_id: Annotated[str | None, typer.Option(help="Expected FAMILY_ID (16 bytes hex).")]
    = None,
    image_id: Annotated[str | None, typer.Option(help="Expected IMAGE_ID (16 bytes hex).")]
    = None,
    chip_id: Annotated[str | None, typer.Option(help="Expected CHIP_ID (64 bytes hex).")] = None,
    vmpl: Annotated[int | None, typer.Option(help="Expected VMPL (0 to 3).")] = None,
    min_tcb: Annotated[str | None, typer.Option(help="Minimum TCB (u64).")] = None,
    min_guest_svn: Annotated[int | None, typer.Option(help="Minimum GUEST_SVN.")] = None,
    allow_debug: Annotated[bool, typer.Option(
        "--allow-debug", help="Accept a debug guest (the host can read its memory).")] = False,
    allow_migration_agent: Annotated[bool, typer.Option(
        "--allow-migration-agent", help="Accept a guest that allows a migration agent.")]
    = False,
    refuse_debug: Annotated[bool, typer.Option("--refuse-debug", hidden=True)] = False,
    at: Annotated[str | None, typer.Option(help="Verify as of (ISO 8601; default now).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Verify the chain and the signature, then the reference values given.

    Debug guests and guests that allow a migration agent are refused unless allowed by name;
    what no reference value checks is printed as "not checked".
    """
    result = verification(
        file, certs=certs, vcek=vcek, chain=chain, cert_table=cert_table, crl=crl,
        collateral=collateral, allow_no_crl=allow_no_crl, product=product, trust=trust,
        workspace=workspace, hexes={
            "measurement": measurement, "report_data": report_data, "host_data": host_data,
            "id_key_digest": id_key_digest, "author_key_digest": author_key_digest,
            "family_id": family_id, "image_id": image_id, "chip_id": chip_id,
        }, vmpl=vmpl, min_tcb=min_tcb, min_guest_svn=min_guest_svn, allow_debug=allow_debug,
        allow_migration_agent=allow_migration_agent, refuse_debug=refuse_debug, at=at)
    if as_json:
        typer.echo(json.dumps(verification_json(result), indent=2))
    else:
        for line in verification_lines(result):
            typer.echo(line)
    refuse_findings(result.findings)
    if not as_json:
        typer.echo(f"measurement {result.verified.report.measurement.hex()}")


@dataclass(frozen=True)
class Verification:
    """An authentic report, the roots it chains to, what the reference values found and what
    none of them checks."""

    verified: VerifiedReport
    trust: str
    findings: tuple[Finding, ...]
    not_checked: tuple[str, ...]
    revocation_checked: bool = True


def verification(
    file: Path, *, certs: Path | None, vcek: Path | None, chain: Path | None,
    cert_table: Path | None, crl: Path | None, product: str | None, trust: Trust,
    workspace: str, hexes: dict[str, str | None], vmpl: int | None, min_tcb: str | None,
    min_guest_svn: int | None, allow_debug: bool, allow_migration_agent: bool,
    refuse_debug: bool, at: str | None, collateral: Path | None = None,
    allow_no_crl: bool = False,
) -> Verification:
    """``verify``'s checks, in order: the options (the reference values, the product), the
    evidence (from the options, and the collateral cache for what they do not give), the
    chain to the roots trusted and the signature as of ``at``, the product the chain is for,
    then the reference values."""
    if refuse_debug:
        raise UsageError(REFUSE_DEBUG_GONE)
    if collateral is None:
        refuse_unused("a verification without --collateral", {"--allow-no-crl": allow_no_crl})
    reference = _reference(
        hexes, vmpl, min_tcb, min_guest_svn, allow_debug, allow_migration_agent
    )
    chosen = product_named(product).name if product is not None else None
    report = read_report(file)
    with reading(file):
        parsed = AttestationReport.from_bytes(report)
    roots = _roots(trust, workspace)
    if collateral is None:
        evidence = _evidence(report, certs, vcek, chain, crl, cert_table)
    else:
        sources = {"certs": certs, "vcek": vcek, "chain": chain, "crl": crl,
                   "cert_table": cert_table}
        evidence = collateral_evidence(report, parsed, collateral, sources, roots, allow_no_crl)
    moment = given_time("--at", at)
    verified = Verifier(roots, clock=lambda: moment).verify(evidence)
    if chosen is not None and chosen != verified.chain.product:
        raise ChainError(f"the evidence is for {verified.chain.product}, not {chosen}")
    return Verification(verified, roots.label, Verifier.validate(verified.report, reference),
                        unchecked(reference), evidence.crl is not None)


def verification_json(result: Verification) -> dict[str, object]:
    verified = result.verified
    return {
        "authentic": True,
        "acceptable": not result.findings,
        "trust": result.trust,
        "product": verified.chain.product,
        "ark_sha256": verified.chain.ark_fingerprint,
        "findings": [
            {"claim": f.claim, "expected": f.expected, "actual": f.actual}
            for f in result.findings
        ],
        "not_checked": list(result.not_checked),
        "revocation_checked": result.revocation_checked,
        "report": verified.report.to_json(),
    }


def verification_lines(result: Verification) -> list[str]:
    """The text before any refusal: the chain and TCB; what no reference value checks."""
    verified = result.verified
    lines = [f"authentic: {verified.chain.product} report, VCEK chain to the "
             f"{result.trust} root {verified.chain.ark_fingerprint[:16]}..., "
             f"TCB {verified.report.reported_tcb}"]
    if result.not_checked:
        lines.append(f"not checked (no reference value given): {', '.join(result.not_checked)}")
    if not result.revocation_checked:
        lines.append(NO_REVOCATION)
    return lines


def refuse_findings(findings: tuple[Finding, ...]) -> None:
    """An authentic report a reference value refuses: the policy error (exit 67), every
    finding in its one line."""
    if findings:
        summary = "; ".join(str(finding) for finding in findings)
        raise PolicyError(f"the report is authentic but not acceptable: {summary}", findings)


@app.command("emulated-root")
def emulated_root(
    workspace: Annotated[str, typer.Option(help="Workspace name.")] = DEFAULT_WORKSPACE,
    product: Annotated[list[str] | None, typer.Option(
        help="Product(s) to make a root for if missing (default Milan).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make (once) and show this installation's emulated AMD roots, pinned by fingerprint."""
    store, pins = emulated_roots(workspace, product)
    if as_json:
        typer.echo(json.dumps({
            "workspace": workspace, "directory": str(store.directory),
            "roots": [{"product": name, "ark_sha256": fp} for name, fp in pins],
        }, indent=2))
        return
    for line in root_lines(workspace, store.directory, pins):
        typer.echo(line)


def emulated_roots(workspace: str, product: list[str] | None
                   ) -> tuple[RootStore, list[tuple[str, str]]]:
    """The workspace's store with a root for each product (Milan unless named), made once;
    and every root it pins, by product and fingerprint."""
    store = RootStore.for_workspace(workspace)
    for name in product or ["Milan"]:
        store.root(name, create=True)
    return store, store.trust_anchors()


def root_lines(workspace: str, directory: Path, pins: list[tuple[str, str]]) -> list[str]:
    return [f"emulated AMD roots of workspace {workspace!r} in {directory}:",
            *(f"  {name:6} ARK SHA-256 {fingerprint}" for name, fingerprint in pins)]
