"""The launch-digest explainer finds the nearby configuration that reproduces a measurement."""

from __future__ import annotations

import pytest

from cvm.attestation.launch_search import launch_explainer
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.snp.vmsa import VmmType
from cvm.image.measurement import VcpuConfig, snp_launch_digest
from cvm.image.vcpu_types import vcpu_signature
from cvm.scenarios.attested_guest import Owner

MILAN = vcpu_signature("EPYC-Milan")


@pytest.mark.parametrize("observed, hint", [
    (VcpuConfig(3, MILAN), "matches with 3 vCPUs instead of 1"),
    (VcpuConfig(1, vcpu_signature("EPYC-Genoa")),
     "matches with vCPU type EPYC-Genoa instead of EPYC-Milan"),
    (VcpuConfig(1, MILAN, vmm=VmmType.GCE), "matches with VMM gce instead of qemu"),
    (VcpuConfig(1, MILAN, guest_features=0x21),
     "matches with guest features 0x21 instead of 0x1"),
    (VcpuConfig(2, vcpu_signature("EPYC-Rome")),
     "matches with 2 vCPUs instead of 1 and vCPU type EPYC-Rome instead of EPYC-Milan"),
])
def test_nearby_configurations(owner: Owner, observed: VcpuConfig, hint: str) -> None:
    explain = launch_explainer(owner.firmware, VcpuConfig(1, MILAN))
    digest = snp_launch_digest(OvmfImage.parse(owner.firmware), observed)
    assert explain(digest) == hint
