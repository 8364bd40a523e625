"""Secure Boot throughput: Authenticode hashing (MiB/s) and full image decisions per second.

Usage: ``python benchmarks/secureboot.py [--json] [--seconds 2] [--size-mib 8]``

Baselines, measured in the same process:

* hashing: ``hashlib.sha256`` over the whole file in one call — the floor for any image hash;
  ``image_digest`` adds parsing and the per-range updates (goal: within 1.2x of the baseline);
* decisions: one bare RSA-2048 PKCS#1 v1.5 / SHA-256 verification through ``cryptography`` —
  ``verify_image`` also parses the PE and the PKCS#7, hashes the image, walks the chain to the db
  certificate and checks the signature over the authenticated attributes.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.guest.boot.secureboot import as_database, verify_image
from cvm.image.signing import sign_pe
from timing import argument_parser, median, print_figures

MIB = 1 << 20


def run(seconds: float, size_mib: int) -> dict[str, float]:
    text = bytes(range(256)) * (size_mib * MIB // 256)
    image = build_pe([SectionSpec(".text", text, CODE), SectionSpec(".data", b"d" * 4096)])
    key = generate_rsa_key()
    cert = issue_certificate("bench", key)
    signed = sign_pe(image, key, cert)
    small = sign_pe(build_pe([SectionSpec(".text", b"\xc3" * 4096, CODE)]), key, cert)
    db = as_database([der(cert)])
    signature = key.sign(b"message", padding.PKCS1v15(), hashes.SHA256())
    public = key.public_key()

    timings = [
        median(lambda: hashlib.sha256(signed).digest(), seconds=seconds, at_least=10),
        median(lambda: image_digest(signed), seconds=seconds, at_least=10),
        median(lambda: public.verify(signature, b"message", padding.PKCS1v15(), hashes.SHA256()),
               seconds=seconds, at_least=10),
        median(lambda: verify_image(small, db), seconds=seconds, at_least=10),
        median(lambda: verify_image(signed, db), seconds=seconds, at_least=10),
    ]
    base_us, hash_us, rsa_us, decide_us, big_us = (timing.us for timing in timings)
    size = len(signed) / MIB
    return {
        "image_mib": round(size, 2),
        "baseline_sha256_mib_per_s": round(size / (base_us / 1e6), 1),
        "authenticode_mib_per_s": round(size / (hash_us / 1e6), 1),
        "ratio_authenticode_to_sha256": round(hash_us / base_us, 3),
        "ratio_goal": 1.2,
        "baseline_rsa2048_verify_us": round(rsa_us, 1),
        "decision_small_image_us": round(decide_us, 1),
        "decisions_small_image_per_s": round(1e6 / decide_us, 1),
        "ratio_decision_to_rsa_verify": round(decide_us / rsa_us, 2),
        "decision_large_image_ms": round(big_us / 1000, 2),
        "samples": float(min(timing.samples for timing in timings)),
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--size-mib", type=int, default=8, help="size of the large image")
    args = parser.parse_args()
    results = run(args.seconds, args.size_mib)
    print_figures(results, as_json=args.json, line="{name:40} {value}")


if __name__ == "__main__":
    main()
