"""The owner's side of provisioning without a VM: the wrapped state key's envelope byte by
byte, the owner's own files, and the relying party's decision on reports signed by an
emulated AMD chip (the real verifier appraises them) — which vCPU count it checks, the nonce
used once, what it records of a refusal, and that nothing is released on any refusal."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from cvm.amd import Vendor, default_vendor, derive_vcek_private_key, product_named
from cvm.attestation.verifier.appraisal import Evidence
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto import aead, amd_ecdsa
from cvm.crypto.key_transport import ephemeral_scalar, public_point, report_data, unwrap
from cvm.errors import ChainError, FormatError, IntegrityError, PolicyError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.image.provisioning import (
    RelyingParty,
    StateKeyRequest,
    owner_keys,
    owner_reference,
    unwrap_state_key,
    wrap_state_key,
)
from cvm.image.reference_values import ImageReferenceValues, LaunchReference, SnpClaims

from .reference_samples import MILAN, Recording, sample

KEY = bytes(range(32))
STATE_KEY = bytes(range(32, 64))
TCB = TcbVersion(boot_loader=9, snp=23, microcode=72)
# A sev launch first (3 vCPUs) and two sev-snp ones: only a sev-snp digest chooses the count.
LAUNCH = (LaunchReference("sev", 3, "EPYC-Milan", MILAN, False, b"\xa1" * 32),
          LaunchReference("sev-snp", 2, "EPYC-Milan", MILAN, True, b"\xa3" * 48),
          LaunchReference("sev-snp", 4, "EPYC-Milan", MILAN, True, b"\xa4" * 48))




# ---- the envelope at rest -----------------------------------------------------------------
def test_the_wrapped_state_key_is_the_documented_envelope() -> None:
    random = Recording()
    wrapped = wrap_state_key(KEY, STATE_KEY, random)
    assert len(wrapped) == 0x44 and wrapped[:8] == b"CVMSKEY1"
    assert random.drawn[0] == wrapped[0x08:0x14] and len(random.drawn[0]) == 12
    assert STATE_KEY not in wrapped
    # AES-256-GCM under the provisioning key, the magic as AAD, tag at 0x14, key at 0x24.
    assert aead.decrypt(KEY, wrapped[0x08:0x14], wrapped[0x24:0x44], wrapped[0x14:0x24],
                        b"CVMSKEY1") == STATE_KEY
    assert unwrap_state_key(KEY, wrapped) == STATE_KEY


@pytest.mark.parametrize("size", [31, 33, 0])
def test_a_state_key_of_another_size_is_not_wrapped(size: int) -> None:
    with pytest.raises(UsageError, match=r"^a vTPM state key is 32 bytes$"):
        wrap_state_key(KEY, bytes(size), os.urandom)


@pytest.mark.parametrize("size", [0x43, 0x45, 0])
def test_an_envelope_of_another_size_is_refused(size: int) -> None:
    wrapped = wrap_state_key(KEY, STATE_KEY, os.urandom)
    data = (wrapped + bytes(1))[:size]
    with pytest.raises(FormatError) as refused:
        unwrap_state_key(KEY, data)
    assert str(refused.value) == f"wrapped state key: {size} bytes, expected 68"


def test_an_envelope_with_another_magic_is_refused_before_decrypting() -> None:
    wrapped = wrap_state_key(KEY, STATE_KEY, os.urandom)
    with pytest.raises(FormatError, match=r"^wrapped state key: bad magic$"):
        unwrap_state_key(KEY, b"CVMSKEY2" + wrapped[8:])
    for offset in (0x08, 0x14, 0x24, 0x43):  # IV, tag, key: each authenticated
        changed = bytearray(wrapped)
        changed[offset] ^= 1
        with pytest.raises(IntegrityError):
            unwrap_state_key(KEY, bytes(changed))


# ---- the owner's files --------------------------------------------------------------------
def _bundle(tmp_path: Path) -> Path:
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner/reference-values.json").write_bytes(sample().to_bytes())
    # The host's copy beside the image says something else: the owner does not read it.
    (tmp_path / "reference-values.json").write_bytes(sample(chain="shim-grub").to_bytes())
    (tmp_path / "owner/provisioning.key").write_bytes(KEY)
    (tmp_path / "owner/vtpm-state-key.wrapped").write_bytes(b"wrapped")
    return tmp_path


def test_the_owner_reads_its_own_copy_and_its_keys(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    assert owner_reference(folder, "booting") == sample()
    assert owner_keys(folder, "booting") == (KEY, b"wrapped")


def test_a_missing_owner_file_is_named_with_what_needed_it(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    (folder / "owner/reference-values.json").unlink()
    with pytest.raises(UsageError) as refused:
        owner_reference(folder, "releasing the key")
    assert str(refused.value) == (
        f"releasing the key needs the owner's {folder}/owner/reference-values.json (a bundle "
        "built before the owner kept its own copy: build it again)")
    for name in ("vtpm-state-key.wrapped", "provisioning.key"):
        (folder / "owner" / name).unlink()
        with pytest.raises(UsageError) as refused:
            owner_keys(folder, "registering")
        assert str(refused.value) == f"registering needs the owner's {folder}/owner/{name}"


# ---- the relying party --------------------------------------------------------------------
@pytest.fixture(scope="module")
def vendor() -> Vendor:
    return default_vendor("Milan")


@pytest.fixture(scope="module")
def sign(vendor: Vendor) -> Callable[..., StateKeyRequest]:
    chip = vendor.manufacture_chip(0)
    key = derive_vcek_private_key(chip.chip_secret, TCB, "Milan")
    vcek = vendor.vcek_certificate(chip.chip_id, TCB)
    product = product_named("Milan")

    def request(nonce: bytes, scalar: bytes, measurement: bytes = b"\xa4" * 48,
                bound: bytes | None = None, vmpl: int = 0) -> StateKeyRequest:
        point = public_point(scalar)
        report = AttestationReport(
            version=3, cpuid_fam_id=product.cpuid_fam_id, cpuid_mod_id=product.cpuid_mod_id,
            chip_id=chip.chip_id, current_tcb=TCB, reported_tcb=TCB, committed_tcb=TCB,
            launch_tcb=TCB, measurement=measurement, vmpl=vmpl,
            report_data=bound if bound is not None else report_data(nonce, point))
        data = report.with_signature(*amd_ecdsa.sign(key, report.signed_bytes())).to_bytes()
        evidence = Evidence.from_cert_chain(data, vcek, vendor.cert_chain())
        return StateKeyRequest(data, evidence.vcek, evidence.ask, evidence.ark, nonce, *point)
    return request


def _party(vendor: Vendor, reference: ImageReferenceValues | None = None,
           provisioning_key: bytes = KEY, roots: TrustRoots | None = None) -> RelyingParty:
    return RelyingParty(reference or sample(launch=LAUNCH, snp=SnpClaims()),
                        roots or TrustRoots.of([vendor.trust_anchor()], "emulated"),
                        provisioning_key, wrap_state_key(KEY, STATE_KEY, os.urandom),
                        Recording())


@pytest.mark.parametrize("measurement", [b"\xa3" * 48, b"\xa4" * 48])
def test_a_predicted_launch_gets_the_state_key_wrapped_to_its_key(
        vendor: Vendor, sign: Callable[..., StateKeyRequest], measurement: bytes) -> None:
    party = _party(vendor)
    nonce = party.challenge()
    assert isinstance(party.random, Recording) and party.random.drawn == [nonce]
    assert len(nonce) == 32
    scalar = ephemeral_scalar()
    wrapped = party.release(sign(nonce, scalar, measurement))
    assert unwrap(scalar, wrapped) == STATE_KEY
    assert party.released == 1 and party.refused == []
    second = party.challenge()
    assert second != nonce
    party.release(sign(second, scalar, measurement))
    assert party.released == 2


def test_each_nonce_is_used_once_and_a_refusal_is_recorded(
        vendor: Vendor, sign: Callable[..., StateKeyRequest]) -> None:
    party = _party(vendor)
    scalar = ephemeral_scalar()
    genuine = sign(party.challenge(), scalar)
    party.release(genuine)
    message = "state key request: the nonce was not issued or is already used"
    for replayed in (genuine, replace(genuine, nonce=os.urandom(32))):
        with pytest.raises(PolicyError) as refused:
            party.release(replayed)
        assert str(refused.value) == message
        assert [(f.claim, f.expected, f.actual) for f in refused.value.findings] == [
            ("nonce", "one issued by challenge()", "unknown")]
    assert party.refused == [f"PolicyError: {message}"] * 2 and party.released == 1


def test_a_refused_request_spends_its_nonce(vendor: Vendor,
                                            sign: Callable[..., StateKeyRequest]) -> None:
    party = _party(vendor)
    scalar = ephemeral_scalar()
    nonce = party.challenge()
    with pytest.raises(PolicyError) as refused:
        party.release(sign(nonce, scalar, bound=bytes(64)))
    assert [f.claim for f in refused.value.findings] == ["report_data"]
    with pytest.raises(PolicyError, match="nonce"):
        party.release(sign(nonce, scalar))
    assert party.released == 0 and len(party.refused) == 2
    assert party.refused[0].startswith("PolicyError: ")


def test_an_unpredicted_measurement_is_checked_against_the_first_snp_launch(
        vendor: Vendor, sign: Callable[..., StateKeyRequest]) -> None:
    party = _party(vendor)
    with pytest.raises(PolicyError) as refused:
        party.release(sign(party.challenge(), ephemeral_scalar(), b"\xa5" * 48))
    (finding,) = refused.value.findings
    assert finding.claim == "measurement"
    assert "a3" * 48 in finding.expected and "a4" * 48 not in finding.expected
    assert party.released == 0


def test_a_reference_without_an_snp_launch_releases_nothing(
        vendor: Vendor, sign: Callable[..., StateKeyRequest]) -> None:
    party = _party(vendor, sample(launch=LAUNCH[:1], snp=SnpClaims()))
    nonce = party.challenge()
    with pytest.raises(UsageError) as refused:
        party.release(sign(nonce, ephemeral_scalar()))
    assert str(refused.value) == "the reference values predict no sev-snp launch"
    assert party.refused == ["UsageError: the reference values predict no sev-snp launch"]


def test_the_claims_of_the_file_are_enforced(vendor: Vendor,
                                             sign: Callable[..., StateKeyRequest]) -> None:
    party = _party(vendor)
    with pytest.raises(PolicyError) as refused:
        party.release(sign(party.challenge(), ephemeral_scalar(), vmpl=1))
    assert [f.claim for f in refused.value.findings] == ["vmpl"]
    at_vmpl_1 = _party(vendor, sample(launch=LAUNCH, snp=SnpClaims(vmpl=1)))
    at_vmpl_1.release(sign(at_vmpl_1.challenge(), ephemeral_scalar(), vmpl=1))
    assert at_vmpl_1.released == 1


def test_inauthentic_evidence_or_a_wrong_provisioning_key_releases_nothing(
        vendor: Vendor, sign: Callable[..., StateKeyRequest]) -> None:
    party = _party(vendor, roots=TrustRoots.amd())
    with pytest.raises(ChainError):
        party.release(sign(party.challenge(), ephemeral_scalar()))
    assert party.released == 0 and party.refused[0].startswith("ChainError: ")
    party = _party(vendor, provisioning_key=bytes(32))
    with pytest.raises(IntegrityError):
        party.release(sign(party.challenge(), ephemeral_scalar()))
    assert party.released == 0 and party.refused[0].startswith("IntegrityError: ")
