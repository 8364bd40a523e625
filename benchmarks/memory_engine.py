"""Throughput of the memory encryption engine against raw AES-128-ECB in the same process.

Usage: ``python benchmarks/memory_engine.py [--json] [--mib 64]``

Baseline: AES-128-ECB over one contiguous buffer through ``cryptography`` (OpenSSL): the raw
speed of the block cipher the engine is built on, the limit an AES-based engine can approach.
Measured: the engine's bulk path (one call for the whole range), its page-granular path (one
call per 4 KiB page), and a single 4 KiB private read and write through a guest's memory path
(nested translation + RMP checks + engine), as medians.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vm import Mode
from cvm.host.vmm import Hypervisor
from timing import argument_parser, best_seconds, median, print_figures

MIB = 1 << 20


def run(mib: int) -> dict[str, float]:
    size = mib * MIB
    data = np.frombuffer(os.urandom(size), dtype=np.uint8)
    out = bytearray(size + 16)
    ecb = Cipher(algorithms.AES(os.urandom(16)), modes.ECB()).encryptor()
    baseline = best_seconds(lambda: ecb.update_into(data, out), 5)

    machine = Machine(2 * size + 64 * MIB)
    machine.engine.activate(1)
    base = 32 * MIB
    target = np.empty(size, dtype=np.uint8)
    bulk_encrypt = best_seconds(lambda: machine.engine.write_pages_from(1, base, data), 5)
    bulk_decrypt = best_seconds(lambda: machine.engine.read_pages_into(1, base, target), 5)
    assert np.array_equal(target, data)

    pages = [data[i : i + PAGE_SIZE].tobytes() for i in range(0, size, PAGE_SIZE)]

    def page_encrypt() -> None:
        for index, page in enumerate(pages):
            machine.engine.write_pages(1, base + index * PAGE_SIZE, page)

    def page_decrypt() -> None:
        for index in range(len(pages)):
            machine.engine.read_pages(1, base + index * PAGE_SIZE, 1)

    paged_encrypt = best_seconds(page_encrypt, 2)
    paged_decrypt = best_seconds(page_decrypt, 2)

    host = Hypervisor(Machine(64 * MIB))
    guest = host.create_vm(Mode.SEV_SNP, 16 * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, 16 * PAGE_SIZE)
    page = os.urandom(PAGE_SIZE)
    write_us = median(lambda: kernel.cpu.write(0x3000, page), at_least=3000).us
    read_us = median(lambda: kernel.cpu.read(0x3000, PAGE_SIZE), at_least=3000).us

    def rate(seconds: float) -> float:
        return size / seconds / MIB

    return {
        "mib": mib,
        "baseline_aes128_ecb_mib_s": rate(baseline),
        "bulk_encrypt_mib_s": rate(bulk_encrypt),
        "bulk_decrypt_mib_s": rate(bulk_decrypt),
        "bulk_encrypt_ratio": baseline / bulk_encrypt,
        "bulk_decrypt_ratio": baseline / bulk_decrypt,
        "page_encrypt_mib_s": rate(paged_encrypt),
        "page_decrypt_mib_s": rate(paged_decrypt),
        "page_encrypt_ratio": baseline / paged_encrypt,
        "page_decrypt_ratio": baseline / paged_decrypt,
        "snp_private_4k_write_median_us": write_us,
        "snp_private_4k_read_median_us": read_us,
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--mib", type=int, default=64, help="amount of guest memory (MiB)")
    args = parser.parse_args()
    figures = run(args.mib)
    print_figures(figures, as_json=args.json, line="{name:34} {value:10.3f}")


if __name__ == "__main__":
    main()
