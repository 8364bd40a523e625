"""The emulated attesting CVMs' owner side: the host's changes to the boot chain, the owner's
``cvm-reference/1`` document, the predicted PCRs, and launches that boot what they are given."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.tcg.algorithm import SHA256
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.replay import replay
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.uki import uki_sections
from cvm.host.launch import DEFAULT_POLICY
from cvm.scenarios.attested_guest import (
    BOOT_ATTACKS,
    CURRENT_TCB,
    OLD_TCB,
    SEALED_PCRS,
    Cvm,
    Owner,
    _edited,
    boot_log,
    emulated_owner,
    reference_json,
    seeded_random,
)

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def owner() -> Owner:
    built = emulated_owner(ISSUED, seed=b"test attested guest")
    _check_owner(built)
    return built


def _check_owner(owner: Owner) -> None:
    """Everything the owner holds agrees with what it says (checked where it is built: the
    fixture is built once, by whichever test runs first)."""
    from asn1crypto import x509

    from cvm.formats.ovmf.image import OvmfImage, build_image
    from cvm.image.measurement import VcpuConfig, snp_launch_digest
    from cvm.scenarios.attested_guest import FIRMWARE_SEED, MILAN_SIGNATURE, SECTIONS

    assert owner.firmware == build_image(0x40000, sections=SECTIONS, seed=FIRMWARE_SEED)
    assert owner.measurement == snp_launch_digest(OvmfImage.parse(owner.firmware),
                                                  VcpuConfig(1, MILAN_SIGNATURE))
    log = boot_log(owner.image.uki, owner.image.varstore)
    assert owner.reference_log == log.to_bytes()
    assert owner.pcrs == replay(log)["sha256"]
    assert sorted(owner.image.predicted) == sorted(SEALED_PCRS) == [4, 7, 11]
    for pcr in SEALED_PCRS:
        assert owner.image.predicted[pcr] == owner.pcrs[pcr]
    vcek = x509.Certificate.load(
        owner.vendor.vcek_certificate(owner.vendor.manufacture_chip(0).chip_id, CURRENT_TCB))
    issued = vcek["tbs_certificate"]["validity"]["not_before"].native
    assert issued == ISSUED  # the vendor's clock is the one given


def test_the_owner_built_and_predicted(owner: Owner) -> None:
    _check_owner(owner)


def test_an_owner_takes_the_image_and_root_it_is_given(owner: Owner) -> None:
    from cvm.amd.authority import generate_root

    root = generate_root("Milan", seeded_random(b"an installation's stored root"))
    again = emulated_owner(ISSUED, b"another seed", image=owner.image, root=root)
    _check_owner(again)
    assert again.image is owner.image
    assert again.vendor.ark_certificate == root.ark_certificate != owner.vendor.ark_certificate
    assert again.vendor.ask_certificate == root.ask_certificate
    assert again.reference_log == owner.reference_log


def test_an_edit_replaces_the_first_occurrence_only() -> None:
    assert _edited(b"a ro\0 b ro\0", b" ro\0", b" rw\0") == b"a rw\0 b ro\0"
    with pytest.raises(AssertionError):
        _edited(b"abc", b"x", b"y")  # nothing to edit
    with pytest.raises(AssertionError):
        _edited(b"abc", b"a", b"aa")  # the length would change


def test_the_host_s_changes_to_the_boot_chain(owner: Owner) -> None:
    image = owner.image
    changed = {name: attack(image) for name, attack in BOOT_ATTACKS.items()}
    assert len(changed) == 4
    for name, (uki, _) in changed.items():
        assert uki != image.uki, name
    cmdline, varstore = changed["host edits the kernel command line on the ESP"]
    assert dict(uki_sections(cmdline))[".cmdline"] != dict(uki_sections(image.uki))[".cmdline"]
    assert b" rw\0" in dict(uki_sections(cmdline))[".cmdline"] and varstore is image.varstore
    kernel, varstore = changed["host patches one byte of the kernel"]
    assert dict(uki_sections(kernel))[".linux"] != dict(uki_sections(image.uki))[".linux"]
    assert len(kernel) == len(image.uki) and varstore is image.varstore
    own, varstore = changed["host swaps in its own unsigned UKI"]
    sections = dict(uki_sections(own))
    assert sections[".linux"] != dict(uki_sections(image.uki))[".linux"]  # its own kernel
    assert sections[".initrd"] == dict(uki_sections(image.uki))[".initrd"]
    assert b"init=/bin/sh" in sections[".cmdline"] and varstore is image.varstore
    off, empty = changed["host clears the varstore (Secure Boot off) and boots its UKI"]
    assert off == own and empty.to_bytes() == Varstore.empty_4m().to_bytes()


def test_the_reference_document(owner: Owner) -> None:
    document = reference_json(owner)
    assert document["version"] == "cvm-reference/1"
    assert document["measurement"] == [owner.measurement.hex()]
    assert document["pcrs"]["sha256"] == {str(p): owner.pcrs[p].hex() for p in
                                          (0, 1, 2, 3, 4, 5, 6, 7, 9, 11) if p in owner.pcrs}
    log = EventLog.parse(owner.reference_log)
    images = {e.digest(SHA256.alg_id).hex() for e in log.events  # type: ignore[union-attr]
              if e.pcr_index == 4
              and e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION}
    assert document["boot_images"] == sorted(images) and images
    assert document["minimum_tcb"] == {"boot_loader": 4, "tee": 0, "snp": 22, "microcode": 213}
    assert reference_json(owner, OLD_TCB)["minimum_tcb"] == {
        "boot_loader": 3, "tee": 0, "snp": 8, "microcode": 115}
    assert document["vmpl"] == 0
    assert document["guest_policy"] == {"allow_debug": False, "allow_migration_agent": False}
    assert base64.b64decode(document["event_log"]) == owner.reference_log
    assert document["unchecked"] == ["host_data", "id_key_digest", "author_key_digest",
                                     "family_id", "image_id", "chip_id", "minimum_guest_svn",
                                     "minimum_firmware"]
    only = reference_json(owner, pcrs=(4, 8, 11))["pcrs"]["sha256"]
    assert only == {"4": owner.pcrs[4].hex(), "11": owner.pcrs[11].hex()}


def _report(cvm: Cvm) -> AttestationReport:
    return AttestationReport.from_bytes(cvm.evidence("n").report)


def test_a_genuine_launch_is_what_the_owner_predicted(owner: Owner) -> None:
    genuine = owner.launch()
    assert (genuine.chip_index, genuine.tcb) == (0, CURRENT_TCB)
    assert genuine.event_log == owner.reference_log  # the same boot, the same log
    report = _report(genuine)
    assert report.measurement == owner.measurement  # one vCPU, the owner's firmware
    assert not report.policy.debug and report.reported_tcb == CURRENT_TCB
    chip = owner.vendor.manufacture_chip(0).chip_id
    assert report.chip_id == chip
    assert genuine.certificates.vcek == owner.vendor.vcek_certificate(chip, CURRENT_TCB)
    assert genuine.certificates.ask == owner.vendor.ask_certificate
    assert genuine.certificates.ark == owner.vendor.ark_certificate
    # the boot measured into the vTPM itself
    _, _, values = genuine.client.pcr_read(PcrSelectionList.of("sha256", [4, 7]))
    assert values == [owner.pcrs[4], owner.pcrs[7]]
    hv, _, _ = owner._platform(0, CURRENT_TCB)
    assert hv.machine.random_bytes is owner.random


def test_a_launch_on_another_chip_tcb_and_policy(owner: Owner) -> None:
    other = owner.launch(1, OLD_TCB, policy=DEFAULT_POLICY | 1 << 19, vcpus=2)
    report = _report(other)
    assert report.chip_id == owner.vendor.manufacture_chip(1).chip_id
    assert report.reported_tcb == OLD_TCB and report.policy.debug
    assert report.measurement != owner.measurement  # two VMSAs measured


def test_a_launch_boots_what_it_is_given(owner: Owner) -> None:
    genuine = owner.launch()
    assert replay(EventLog.parse(genuine.event_log))["sha256"][4] == owner.pcrs[4]
    uki, varstore = BOOT_ATTACKS["host clears the varstore (Secure Boot off) and boots its "
                                 "UKI"](owner.image)
    hostile = owner.launch(1, OLD_TCB, uki=uki, varstore=varstore)
    assert (hostile.chip_index, hostile.tcb) == (1, OLD_TCB)
    assert replay(EventLog.parse(hostile.event_log))["sha256"][4] != owner.pcrs[4]
    assert owner._platform(0, CURRENT_TCB) is owner._platform(0, CURRENT_TCB)
    assert owner._platform(1, OLD_TCB)[1].reported_tcb == OLD_TCB


def test_seeded_randomness_repeats() -> None:
    assert seeded_random(b"a")(32) == seeded_random(b"a")(32) != seeded_random(b"b")(32)


def test_evidence_binds_the_cvm_s_tee_key_or_the_one_given(owner: Owner) -> None:
    from cvm.formats.kbs.evidence import report_data_for, runtime_digest
    from cvm.formats.snp.attestation_report import AttestationReport
    from cvm.formats.tpm2.public import Public

    cvm = owner.launch()
    first = cvm.evidence("nonce-1")
    agent = cvm.agent
    assert agent is not None
    second = cvm.evidence("nonce-2", {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"})
    assert cvm.agent is agent and first.ak_public == second.ak_public  # one AK, kept
    ak = Public.from_bytes(first.ak_public)
    for evidence, nonce, key in ((first, "nonce-1", cvm.tee_key.public_jwk()),
                                 (second, "nonce-2", {"kty": "EC", "crv": "P-256", "x": "a",
                                                      "y": "b"})):
        report = AttestationReport.from_bytes(evidence.report)
        assert report.report_data == report_data_for(runtime_digest(nonce, key), ak.name(),
                                                     evidence.svsm_manifest)
        assert evidence.event_log == cvm.event_log
        assert evidence.vcek == cvm.certificates.vcek
