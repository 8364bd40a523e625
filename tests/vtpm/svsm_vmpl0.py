"""The SVSM's VMPL0 as its state-key paths find it, for the tests of those paths."""

from __future__ import annotations

from typing import Any

from cvm.guest.kernel.guest_request import GuestRequester
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.guest.svsm.svsm import SvsmLayout

LAYOUT = SvsmLayout()


def vmpl0(snp: Any) -> tuple[Any, GuestRequester]:
    """A launched SNP guest's boot vCPU at VMPL0 with its guest-request channel, and the key
    page accepted and filled with 0xdd, as the SVSM finds it."""
    launched = snp.launch()
    vcpu = launched.guest.vcpus[0]
    requester = GuestRequester.start(vcpu, launched.secrets_gpa, 0, ghcb_gpa=LAYOUT.ghcb_gpa,
                                     request_gpa=LAYOUT.request_gpa,
                                     response_gpa=LAYOUT.response_gpa)
    SevGuest(vcpu).accept(LAYOUT.key_gpa)
    vcpu.write(LAYOUT.key_gpa, b"\xdd" * 0x1000)
    return vcpu, requester
