"""The relying party releases the vTPM state key to a genuine SEV-SNP launch of the image (its
SVSM at VMPL0), wrapped to the key bound in REPORT_DATA — and to nothing else."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import pytest

from cvm.amd.pki import Vendor, default_vendor
from cvm.attestation.verifier.appraisal import Evidence
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.key_transport import ephemeral_scalar, public_point, report_data, unwrap
from cvm.errors import ChainError, FormatError, IntegrityError, PolicyError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.guest.kernel.guest_request import GuestRequester
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.launch import GuestRequestRelay, SnpLaunchConfig, launch_snp_svsm
from cvm.host.vmm import Hypervisor
from cvm.image.bundle import BuiltImage
from cvm.image.keys import OwnerKeys
from cvm.image.provisioning import (
    RelyingParty,
    StateKeyRequest,
    unwrap_state_key,
    wrap_state_key,
)

MILAN = 0x00A00F11


@dataclass
class Launched:
    requester: GuestRequester
    psp: SecureProcessor


@pytest.fixture(scope="module")
def vendor() -> Vendor:
    return default_vendor("Milan")


def _launch(vendor: Vendor, built: BuiltImage, svsm: bytes | None = None) -> Launched:
    machine = Machine(256 << 20)
    psp = SecureProcessor(machine, vendor.manufacture_chip(0))
    hv = Hypervisor(machine, psp)
    relay = GuestRequestRelay(psp)
    out = built.out
    vars_size = len((out / "firmware/OVMF_VARS.fd").read_bytes())
    launched = launch_snp_svsm(
        hv, psp, (out / "firmware/OVMF.fd").read_bytes(),
        svsm or (out / "firmware/SVSM.bin").read_bytes(), vars_size,
        SnpLaunchConfig(vcpus=1, vcpu_signature=MILAN), relay)
    vcpu = launched.guest.vcpus[0]
    vcpu.vmrun()
    assert launched.secrets_gpa is not None
    requester = GuestRequester.start(vcpu, launched.secrets_gpa, ghcb_gpa=0x10000,
                                     request_gpa=0x11000, response_gpa=0x12000)
    return Launched(requester, psp)


def _request(vendor: Vendor, launched: Launched, nonce: bytes, scalar: bytes,
             bound: bytes | None = None) -> StateKeyRequest:
    point = public_point(scalar)
    data = bound if bound is not None else report_data(nonce, point)
    report = launched.requester.report(data).report
    parsed = AttestationReport.from_bytes(report)
    vcek = vendor.vcek_certificate(launched.psp.chip_id, parsed.reported_tcb)
    evidence = Evidence.from_cert_chain(report, vcek, vendor.cert_chain())
    return StateKeyRequest(report, evidence.vcek, evidence.ask, evidence.ark, nonce, *point)


def _party(vendor: Vendor, built: BuiltImage, roots: TrustRoots | None = None) -> RelyingParty:
    keys = OwnerKeys.load(built.out / "owner")
    return RelyingParty(built.reference, roots or TrustRoots.of([vendor.trust_anchor()],
                                                                "emulated"),
                        keys.provisioning,
                        (built.out / "owner/vtpm-state-key.wrapped").read_bytes(), os.urandom)


def _state_key(built: BuiltImage) -> bytes:
    keys = OwnerKeys.load(built.out / "owner")
    return unwrap_state_key(keys.provisioning,
                            (built.out / "owner/vtpm-state-key.wrapped").read_bytes())


def test_a_genuine_launch_gets_the_state_key_wrapped_to_its_key(
        vendor: Vendor, built_images: dict[str, BuiltImage]) -> None:
    built = built_images["uki"]
    party = _party(vendor, built)
    launched = _launch(vendor, built)
    scalar = ephemeral_scalar()
    wrapped = party.release(_request(vendor, launched, party.challenge(), scalar))
    assert unwrap(scalar, wrapped) == _state_key(built)
    assert _state_key(built) not in wrapped
    with pytest.raises(IntegrityError):
        unwrap(ephemeral_scalar(), wrapped)
    assert party.released == 1


def test_refusals(vendor: Vendor, built_images: dict[str, BuiltImage]) -> None:
    built = built_images["uki"]
    party = _party(vendor, built)
    launched = _launch(vendor, built)
    scalar = ephemeral_scalar()
    genuine = _request(vendor, launched, party.challenge(), scalar)
    party.release(genuine)
    with pytest.raises(PolicyError, match="nonce"):
        party.release(genuine)  # replayed
    with pytest.raises(PolicyError, match="nonce"):
        party.release(replace(genuine, nonce=os.urandom(32)))  # never issued
    # The host swaps in its own public key beside the genuine report.
    nonce = party.challenge()
    honest = _request(vendor, launched, nonce, scalar)
    thief = public_point(ephemeral_scalar())
    with pytest.raises(PolicyError) as refused:
        party.release(replace(honest, public_x=thief[0], public_y=thief[1]))
    assert [f.claim for f in refused.value.findings] == ["report_data"]
    assert party.released == 1 and len(party.refused) == 3


def test_other_firmware_gets_nothing(vendor: Vendor,
                                     built_images: dict[str, BuiltImage]) -> None:
    built = built_images["uki"]
    party = _party(vendor, built)
    svsm = bytearray((built.out / "firmware/SVSM.bin").read_bytes())
    svsm[0x100] ^= 1
    launched = _launch(vendor, built, bytes(svsm))
    with pytest.raises(PolicyError) as refused:
        party.release(_request(vendor, launched, party.challenge(), ephemeral_scalar()))
    assert [f.claim for f in refused.value.findings] == ["measurement"]


def test_untrusted_roots_get_nothing(vendor: Vendor,
                                     built_images: dict[str, BuiltImage]) -> None:
    built = built_images["uki"]
    party = _party(vendor, built, TrustRoots.amd())
    launched = _launch(vendor, built)
    with pytest.raises(ChainError):
        party.release(_request(vendor, launched, party.challenge(), ephemeral_scalar()))


def test_the_wrapped_state_key_needs_the_provisioning_key() -> None:
    key, state_key = os.urandom(32), os.urandom(32)
    wrapped = wrap_state_key(key, state_key, os.urandom)
    assert unwrap_state_key(key, wrapped) == state_key
    with pytest.raises(IntegrityError):
        unwrap_state_key(os.urandom(32), wrapped)
    flipped = bytearray(wrapped)
    flipped[-1] ^= 1
    with pytest.raises(IntegrityError):
        unwrap_state_key(key, bytes(flipped))
    with pytest.raises(FormatError):
        unwrap_state_key(key, wrapped[:-1])
