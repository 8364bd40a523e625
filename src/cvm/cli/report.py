"""``cvm report``: show and verify SEV-SNP attestation reports (AMD 56860 Table 22).

``verify`` checks the ARK -> ASK -> VCEK chain, the binding of the VCEK to the report's chip
and TCB, and the report signature; reference values given as options are then validated.
``--trust amd`` (the default) accepts only AMD's real roots, pinned by SHA-256; ``--trust
emulated`` accepts only cvm's emulated roots (the default-seed vendor), never both at once.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cvm.amd import DEFAULT_SEED, PRODUCTS, product_named
from cvm.amd.authority import root_key_and_certificate
from cvm.attestation.verifier import Evidence, ReferenceValues, TrustRoots, Verifier
from cvm.crypto.x509_chain import load_certificates, parse_certificate
from cvm.errors import ChainError, FormatError, PolicyError, UsageError
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


def _describe(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


@app.command()
def show(
    file: Annotated[Path, typer.Argument(help="Report: 1184 raw bytes or hex text.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Decode a report and print every field."""
    report = AttestationReport.from_bytes(read_report(file))
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    for name in report.to_json():
        typer.echo(f"{name:20} {_describe(getattr(report, name))}")


def _find(directory: Path, stem: str) -> Path:
    for candidate in sorted(directory.iterdir()):
        suffix = candidate.suffix.lower()
        if candidate.stem.lower() == stem and suffix in {".pem", ".der", ".crt", ".cer"}:
            return candidate
    raise UsageError(f"{directory}: no {stem}.pem or {stem}.der")


def _load_one(path: Path) -> bytes:
    return load_certificates(path.read_bytes())[0].der


def _evidence(
    report: bytes,
    certs: Path | None,
    vcek: Path | None,
    chain: Path | None,
    crl: Path | None,
    cert_table: Path | None,
) -> Evidence:
    crl_bytes = crl.read_bytes() if crl else None
    if sum(1 for given in (certs, vcek or chain, cert_table) if given) > 1:
        raise UsageError("give one of --certs DIR, --vcek F --chain F, or --cert-table F")
    if cert_table is not None:
        return Evidence.from_cert_table(report, cert_table.read_bytes(), crl_bytes)
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
    return Evidence.from_cert_chain(report, vcek.read_bytes(), chain.read_bytes(), crl_bytes)


def _roots(trust: Trust, product: str | None, evidence: Evidence) -> TrustRoots:
    if trust is Trust.amd:
        return TrustRoots.amd()
    if product is None:
        # The emulated root to compare against is chosen by the product the ARK names;
        # trust still comes only from recomputing that root from the default seed.
        name = parse_certificate(evidence.ark).common_name
        product = next((p for p in PRODUCTS if name == f"ARK-{p}-emulated"), None)
        if product is None:
            raise ChainError(f"the root {name!r} is not an emulated cvm root; use --trust amd")
    chosen = product_named(product)
    _, ark = root_key_and_certificate(chosen, DEFAULT_SEED)
    return TrustRoots.of([(chosen.name, hashlib.sha256(ark).hexdigest())], "emulated")


def _moment(at: str | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        raise UsageError(f"--at: not an ISO 8601 time: {at!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _reference(
    measurement: str | None, report_data: str | None, host_data: str | None,
    vmpl: int | None, min_tcb: str | None, refuse_debug: bool,
) -> ReferenceValues:
    def hex_bytes(value: str | None, name: str) -> bytes | None:
        if value is None:
            return None
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise UsageError(f"--{name}: not hex") from None

    minimum = None
    if min_tcb is not None:
        try:
            minimum = TcbVersion.from_int(int(min_tcb, 0))
        except ValueError:
            raise UsageError("--min-tcb: not an integer") from None
    return ReferenceValues(
        measurement=hex_bytes(measurement, "measurement"),
        report_data=hex_bytes(report_data, "report-data"),
        host_data=hex_bytes(host_data, "host-data"),
        vmpl=vmpl,
        minimum_tcb=minimum,
        allow_debug=not refuse_debug,
        allow_migration_agent=True,
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
    product: Annotated[str | None, typer.Option(help="Milan, Genoa or Turin.")] = None,
    trust: Annotated[Trust, typer.Option(help="Roots to trust.")] = Trust.amd,
    measurement: Annotated[str | None, typer.Option(help="Expected MEASUREMENT (hex).")] = None,
    report_data: Annotated[str | None, typer.Option(help="Expected REPORT_DATA (hex).")] = None,
    host_data: Annotated[str | None, typer.Option(help="Expected HOST_DATA (hex).")] = None,
    vmpl: Annotated[int | None, typer.Option(help="Expected VMPL.")] = None,
    min_tcb: Annotated[str | None, typer.Option(help="Minimum TCB (u64).")] = None,
    refuse_debug: Annotated[bool, typer.Option(help="Refuse debug guests.")] = False,
    at: Annotated[str | None, typer.Option(help="Verify as of (ISO 8601; default now).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Verify the chain and the signature, then the reference values given."""
    evidence = _evidence(read_report(file), certs, vcek, chain, crl, cert_table)
    roots = _roots(trust, product, evidence)
    moment = _moment(at)
    verified = Verifier(roots, clock=lambda: moment).verify(evidence)
    if product is not None and product_named(product).name != verified.chain.product:
        raise ChainError(f"the evidence is for {verified.chain.product}, not {product}")
    reference = _reference(measurement, report_data, host_data, vmpl, min_tcb, refuse_debug)
    findings = Verifier.validate(verified.report, reference)
    if as_json:
        typer.echo(json.dumps({
            "authentic": True,
            "acceptable": not findings,
            "trust": roots.label,
            "product": verified.chain.product,
            "ark_sha256": verified.chain.ark_fingerprint,
            "findings": [
                {"claim": f.claim, "expected": f.expected, "actual": f.actual} for f in findings
            ],
            "report": verified.report.to_json(),
        }, indent=2))
    else:
        typer.echo(
            f"authentic: {verified.chain.product} report, VCEK chain to the "
            f"{roots.label} root {verified.chain.ark_fingerprint[:16]}..., "
            f"TCB {verified.report.reported_tcb}"
        )
    if findings:
        summary = "; ".join(str(finding) for finding in findings)
        raise PolicyError(f"the report is authentic but not acceptable: {summary}", findings)
    if not as_json:
        typer.echo(f"measurement {verified.report.measurement.hex()}")
