"""Launch measurement throughput: predicting and emulating an SEV-SNP launch of an OVMF image.

Usage: ``python benchmarks/launch.py [--json] [--mib 2]``

Baseline: SHA-384 over the firmware image page by page with ``hashlib`` (OpenSSL) — the hashing
every PAGE_INFO needs and the floor any launch-digest computation pays. Measured:

* ``predict``: :func:`cvm.image.measurement.snp_launch_digest` (PAGE_INFO chain, 4 vCPUs);
* ``launch``: the host's QEMU-style launch on the emulated PSP (host copies, RMPUPDATE,
  SNP_LAUNCH_UPDATE: measure, encrypt in place, RMP validate) — pages per second;
* ``guest_request``: one MSG_REPORT_REQ through the GHCB and the PSP (AES-256-GCM both ways
  and one ECDSA P-384 signature) against one bare ECDSA P-384 signature.
"""

from __future__ import annotations

import hashlib

from cvm.amd.kds import ChipFuses
from cvm.crypto import aead, amd_ecdsa
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.sev_area import SevArea
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.guest_message import GuestMessage, MessageHeader, MessageType
from cvm.formats.snp.report_request import ReportRequest
from cvm.formats.snp.secrets_page import SecretsPage
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.launch import launch_snp
from cvm.host.vmm import Hypervisor
from cvm.image.measurement import VcpuConfig, snp_launch_digest
from timing import argument_parser, best_seconds, print_figures

MIB = 1 << 20
PAGE = 0x1000
SECTIONS = (
    MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
    MetadataSection(0x810000, 0x1000, SectionType.SNP_KERNEL_HASHES),
)


def run(mib: int) -> dict[str, float]:
    firmware = build_image(
        mib * MIB, sections=SECTIONS, sev_hash_table=SevArea(0x810C00, 0x400), seed=b"bench"
    )
    image = OvmfImage.parse(firmware)
    pages = [firmware[i : i + PAGE] for i in range(0, len(firmware), PAGE)]
    baseline = best_seconds(lambda: [hashlib.sha384(page).digest() for page in pages])
    predict = best_seconds(lambda: snp_launch_digest(image, VcpuConfig(4, 0x00A00F11)))

    machine = Machine(16 * (mib + 8) * MIB)
    hv = Hypervisor(machine)
    psp = SecureProcessor(machine, ChipFuses("Milan", b"\x01" * 64, b"\x02" * 64))
    launched = []
    launch = best_seconds(lambda: launched.append(launch_snp(hv, psp, firmware)), 2)

    # Guest requests straight to the firmware: the guest's AEAD and the PSP's work.
    snp = launched[-1]
    vcpu = snp.guest.vcpus[0]
    vcpu.vmrun()
    assert snp.secrets_gpa is not None
    snp.guest.vm.set_private(snp.secrets_gpa, True)
    key = SecretsPage.from_bytes(vcpu.read(snp.secrets_gpa, PAGE)).vmpck(0)
    payload = ReportRequest(bytes(64)).to_bytes()
    seqno = [0]

    def request() -> None:
        seqno[0] += 1
        header = MessageHeader(seqno[0], MessageType.REPORT_REQ, len(payload), 0)
        ciphertext, tag = aead.encrypt(key, header.iv(), payload, header.aad())
        sealed = MessageHeader(seqno[0], MessageType.REPORT_REQ, len(payload), 0, authtag=tag)
        page = GuestMessage(sealed, ciphertext).to_page()
        answer = GuestMessage.from_page(psp.snp_guest_request(snp.handle, page))
        aead.decrypt(
            key, answer.header.iv(), answer.payload, answer.header.authtag, answer.header.aad()
        )
        seqno[0] += 1

    count = 50
    requests = best_seconds(lambda: [request() for _ in range(count)]) / count
    signing_key = psp.vcek_private_key(psp.reported_tcb)
    signed = bytes(0x2A0)
    sign = best_seconds(lambda: [amd_ecdsa.sign(signing_key, signed) for _ in range(count)]) / count
    size = len(firmware) / MIB
    return {
        "firmware_mib": size,
        "baseline_sha384_mib_per_s": size / baseline,
        "predict_mib_per_s": size / predict,
        "predict_ratio_to_baseline": baseline / predict,
        "launch_pages_per_s": len(pages) / launch,
        "launch_ratio_to_baseline": baseline / launch,
        "guest_requests_per_s": 1 / requests,
        "bare_ecdsa_signs_per_s": 1 / sign,
        "guest_request_ratio_to_ecdsa_sign": sign / requests,
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--mib", type=int, default=2, help="firmware image size in MiB")
    args = parser.parse_args()
    figures = run(args.mib)
    print_figures(figures, as_json=args.json, line="{name:38} {value:12.2f}")


if __name__ == "__main__":
    main()
