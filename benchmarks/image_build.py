"""Image build time: `cvm image build` per chain, each phase's share, against key generation.

Usage: ``python benchmarks/image_build.py [--json] [--runs 3]``

Each run builds a whole bundle (fast recovery KDF, every mode) in a temporary folder, with fresh
owner keys. The baseline, measured in the same process, is generating the owner's four RSA-2048
keys alone — the one cost the owner cannot avoid (Secure Boot PK, KEK, db and the shim vendor or
PCR-policy key); the ratio says how much the rest of the build (signing, prediction, the disk
with its ESP and pre-encrypted root, the vTPM, the launch digests) adds on top of it.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from cvm.crypto.x509_edk2 import generate_rsa_key, issue_certificate
from cvm.image.bundle import ImageSpec, build_image
from cvm.image.firmware import MODES
from timing import argument_parser, median, print_figures

KEYS = 4


def _keys() -> None:
    for index in range(KEYS):
        issue_certificate(f"bench {index}", generate_rsa_key())


def run(runs: int) -> dict[str, object]:
    baseline = median(_keys, at_least=runs).seconds
    figures: dict[str, object] = {"baseline_four_rsa2048_keys_s": round(baseline, 3)}
    for chain in ("uki", "shim-grub"):
        totals: list[float] = []
        phases: dict[str, list[float]] = {}
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as scratch:
                built = build_image(Path(scratch) / "img",
                                    ImageSpec(chain=chain, modes=MODES, kdf_cost="fast"))
            totals.append(sum(built.timings.values()))
            for name, seconds in built.timings.items():
                phases.setdefault(name, []).append(seconds)
        total = statistics.median(totals)
        figures[f"{chain}_build_s"] = round(total, 3)
        figures[f"{chain}_ratio_to_keys"] = round(total / baseline, 2)
        figures[f"{chain}_phase_share"] = {
            name: round(statistics.median(values) / total, 3) for name, values in phases.items()}
    return figures


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--runs", type=int, default=3, help="builds per chain (median)")
    args = parser.parse_args()
    print_figures(run(args.runs), as_json=args.json)


if __name__ == "__main__":
    main()
