"""Explaining a launch-digest mismatch: the nearby launch configuration that reproduces it.

A launch digest (AMD 56860 section 8.17) folds the firmware pages, the metadata sections and
one VMSA page per vCPU; the VMSA carries the vCPU signature (the vCPU type), SEV_FEATURES (the
guest features) and the VMM's register conventions. When a report's MEASUREMENT is not the
predicted one, the cause is most often the host's launch command line: more vCPUs, another
``-cpu`` model, another VMM, other features. :func:`launch_explainer` searches those
neighbours of the expected configuration — the firmware part is computed once, the vCPU count
is grown one VMSA page at a time — and names the closest one that matches ("matches with 4
vCPUs instead of 2"). It is injected into the verifier, which itself knows no image.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from cvm.errors import UsageError
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.snp.page_info import VMSA_GPA, PageType, extend
from cvm.formats.snp.sev_hashes import SevHashTable
from cvm.formats.snp.vmsa import VmmType
from cvm.image.measurement import VcpuConfig, snp_metadata_digest, snp_ovmf_digest, vmsa_pages
from cvm.image.vcpu_types import VCPU_SIGNATURES

MAX_VCPUS = 64
GUEST_FEATURES = (0x1, 0x0, 0x21, 0x3, 0x5)


def _signature_name(signature: int) -> str:
    for name, value in VCPU_SIGNATURES.items():
        if value == signature:
            return name
    return f"signature {signature:#010x}"


def _describe(found: VcpuConfig, expected: VcpuConfig) -> str:
    changes = []
    if found.count != expected.count:
        changes.append(f"{found.count} vCPUs instead of {expected.count}")
    if found.signature != expected.signature:
        changes.append(f"vCPU type {_signature_name(found.signature)} instead of "
                       f"{_signature_name(expected.signature)}")
    if found.vmm != expected.vmm:
        changes.append(f"VMM {found.vmm.value} instead of {expected.vmm.value}")
    if found.guest_features != expected.guest_features:
        changes.append(f"guest features {found.guest_features:#x} instead of "
                       f"{expected.guest_features:#x}")
    return "matches with " + " and ".join(changes)


def launch_explainer(firmware: bytes, expected: VcpuConfig,
                     hashes: SevHashTable | None = None) -> Callable[[bytes], str | None]:
    """A function from an observed measurement to the nearby configuration that gives it."""
    image = OvmfImage.parse(firmware)
    base = snp_ovmf_digest(image)
    if image.reset_block is None:
        raise UsageError("the firmware has no SEV-ES reset block: it cannot boot SNP guests")
    # Up to MAX_VCPUS vCPUs, or the expected count if more; a firmware without an AP entry
    # point launches one vCPU only.
    max_count = max(MAX_VCPUS, expected.count) if image.reset_block.eip != 0 else 1
    signatures = sorted(set(VCPU_SIGNATURES.values()) | {expected.signature},
                        key=lambda s: s != expected.signature)
    vmms = sorted(VmmType, key=lambda v: v != expected.vmm)
    features = sorted(set(GUEST_FEATURES) | {expected.guest_features},
                      key=lambda f: f != expected.guest_features)

    def search(observed: bytes) -> str | None:
        best: tuple[int, VcpuConfig] | None = None
        for vmm, signature, feature in itertools.product(vmms, signatures, features):
            distance = ((vmm != expected.vmm) + (signature != expected.signature)
                        + (feature != expected.guest_features))
            if best is not None and distance >= best[0]:
                continue
            digest = snp_metadata_digest(base, image, hashes, vmm)
            # The BSP's page, then (with an AP entry point) the page every AP repeats.
            pages = vmsa_pages(image, VcpuConfig(min(max_count, 2), signature, feature, vmm),
                               feature)
            for count in range(1, max_count + 1):
                digest = extend(digest, PageType.VMSA, VMSA_GPA, pages[min(count, 2) - 1])
                if digest == observed:
                    total = distance + (count != expected.count)
                    if best is None or total < best[0]:
                        best = (total, VcpuConfig(count, signature, feature, vmm))
                    break
        if best is None:
            return None
        if best[0] == 0:
            return "the expected configuration reproduces it (the reference is stale?)"
        return _describe(best[1], expected)

    return search
