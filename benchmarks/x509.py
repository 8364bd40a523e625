"""Parsing AMD's certificates: the DER reader against asn1crypto, per certificate.

Usage: ``python benchmarks/x509.py [--json] [--seconds 0.5]``

Baseline: ``parse_certificate_strictly``, the asn1crypto parse every certificate took before
(and every certificate outside AMD's shape still takes). Measured, as medians over many runs in
the same process: ``parse_certificate`` on the real Milan ARK, ASK and VCEK (AMD's key
distribution service's, from the project's vectors) and on the emulated Milan vendor's — the
three certificates a relying party parses at every cold chain verification.

Goal: at least 3x faster than the baseline on each.
"""

from __future__ import annotations

from pathlib import Path

from cvm.amd import Vendor
from cvm.crypto.x509_chain import certificate_ders, parse_certificate, parse_certificate_strictly
from cvm.formats.snp.tcb_version import TcbVersion
from timing import argument_parser, median, print_figures

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "snp" / "virtee-sev"


def certificates() -> dict[str, bytes]:
    ask, ark = certificate_ders((VECTORS / "tests/certs_data/cert_chain_milan").read_bytes())
    vendor = Vendor("Milan")
    chip = vendor.manufacture_chip(0)
    tcb = TcbVersion(boot_loader=4, tee=0, snp=22, microcode=213)
    return {
        "real ARK": ark,
        "real ASK": ask,
        "real VCEK": (VECTORS / "tests/certs_data/vcek_milan.der").read_bytes(),
        "emulated ARK": vendor.ark_certificate,
        "emulated ASK": vendor.ask_certificate,
        "emulated VCEK": vendor.vcek_certificate(chip.chip_id, tcb),
    }


def run(seconds: float) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name, der in certificates().items():
        assert parse_certificate(der) == parse_certificate_strictly(der)
        baseline = median(lambda der=der: parse_certificate_strictly(der), seconds=seconds)
        fast = median(lambda der=der: parse_certificate(der), seconds=seconds)
        figures[f"{name} asn1crypto us"] = round(baseline.us, 1)
        figures[f"{name} parse_certificate us"] = round(fast.us, 1)
        figures[f"{name} speed-up (x)"] = round(baseline.seconds / fast.seconds, 1)
    return figures


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = parser.parse_args()
    print_figures(run(args.seconds), as_json=args.json, line="{name:38} {value}")


if __name__ == "__main__":
    main()
