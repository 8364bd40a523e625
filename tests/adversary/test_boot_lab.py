"""The booted VM every attack acts on (:class:`cvm.scenarios.boot_lab.BootLab`), method by method:
the host's own copy of the files, the genuine first boot, each relaunch as the host asks for it
(a bit flipped, a debug policy, the PSP rolled back, the reference values forged), evidence and
its appraisal, the guest's own actions, and what the host can read afterwards."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from cvm.amd.pki import default_vendor
from cvm.attestation.verifier.appraisal import Verifier
from cvm.attestation.verifier.trust import TrustRoots
from cvm.errors import (
    ChainError,
    Finding,
    FormatError,
    PolicyError,
    SignatureError,
    StateError,
    StatusError,
)
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.cpuid_page import CpuidPage
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.guest.run import PRODUCT
from cvm.guest.trace import VmTrace
from cvm.guest.vm import GuestMemoryMap
from cvm.hardware.fault import Fault, FaultKind, FaultRaised, Who
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vm import Mode
from cvm.host.adversary.boot_files import manifest
from cvm.host.adversary.lab import BootReport, Evidence, Release
from cvm.host.adversary.memory import read_guest_page
from cvm.host.launch import DEFAULT_POLICY
from cvm.image.provisioning import owner_reference
from cvm.scenarios import boot_lab
from cvm.scenarios.attack_bundles import LabBundles
from cvm.scenarios.boot_lab import (
    NEW_FIRMWARE,
    NEW_TCB,
    OLD_FIRMWARE,
    OLD_TCB,
    SECRET_GPA,
    SPARE_GPA,
    BootLab,
    TcbFloorVerifier,
    forge_launch_digest,
    latest_guest,
    owner_party,
    release_of,
    workload_data,
)

Labs = Callable[[Mode], BootLab]
ACCEPTED = "measurement, policy, TCB and nonce accepted"


# -- the pure parts --------------------------------------------------------------------------
def test_a_release_names_the_failed_claims() -> None:
    assert release_of(None, True) == Release(True, True, (), ACCEPTED)
    refused = PolicyError("two claims", (Finding("measurement", "a", "b"),
                                         Finding("policy.debug", "0", "1")))
    assert release_of(refused, False) == Release(False, True, ("measurement", "policy.debug"),
                                                 "two claims")
    assert release_of(ChainError("bad ask"), False) == Release(False, True, ("chain",),
                                                               "bad ask")
    assert release_of(SignatureError("bad sig"), False) == Release(False, True, ("signature",),
                                                                   "bad sig")
    assert release_of(StatusError("busy", 3), False) == Release(False, True, (),
                                                                "StatusError: busy")
    assert release_of(None, False) == Release(False, True, (), "NoneType: None")


def test_forging_writes_one_mode_s_digest(tmp_path: Path) -> None:
    path = tmp_path / "reference-values.json"
    path.write_text(json.dumps({"launch": [{"mode": "sev", "digest": "00"},
                                           {"mode": "sev-snp", "digest": "11"}], "other": 1}))
    forge_launch_digest(path, "sev-snp", b"\xab\xcd")
    assert json.loads(path.read_text()) == {"launch": [{"mode": "sev", "digest": "00"},
                                                       {"mode": "sev-snp", "digest": "abcd"}],
                                            "other": 1}
    assert path.read_text().endswith("}\n") and "\n \"launch\"" in path.read_text()


@dataclass(frozen=True)
class Reference:
    measurement: bytes
    minimum_tcb: TcbVersion


def test_the_relying_party_demands_its_own_tcb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever TCB the image's reference values accept, the relying party's floor is its own."""
    seen: list[Any] = []

    def appraise(self: Verifier, evidence: Any, reference: Any) -> str:
        seen.append((self, evidence, reference))
        return "verified"

    monkeypatch.setattr(Verifier, "appraise", appraise)
    roots = TrustRoots.of([default_vendor(PRODUCT).trust_anchor()], "emulated")
    verifier = TcbFloorVerifier(roots, NEW_TCB)
    assert verifier.minimum_tcb == NEW_TCB and verifier.roots is roots
    assert verifier.appraise("evidence", Reference(b"m", OLD_TCB)) == "verified"  # type: ignore[arg-type]
    assert seen == [(verifier, "evidence", Reference(b"m", NEW_TCB))]


def test_the_owner_s_party_uses_the_floor(bundles: LabBundles) -> None:
    folder = bundles.own_for(Mode.SEV_SNP)
    party = owner_party(folder, owner_reference(folder, "test"), default_vendor(PRODUCT),
                        random.Random(3).randbytes)
    assert isinstance(party.verifier, TcbFloorVerifier)
    assert party.verifier.minimum_tcb == NEW_TCB


def test_the_workload_data_and_the_latest_guest() -> None:
    assert workload_data({"workload data": b"12345678", "volume key": b"k" * 32}) == b"12345678"
    assert workload_data({"volume key": b"k" * 32}) == b""
    with pytest.raises(StateError, match=r"^the VM has not been launched yet$"):
        latest_guest([])
    first, second, third = (VmTrace("sev", 1) for _ in range(3))
    first.guest, second.guest = "first", "second"
    assert latest_guest([first, second, third]) == "second"
    assert latest_guest([first]) == "first"


def test_the_pages_are_the_workload_s_and_a_spare_one() -> None:
    memory = GuestMemoryMap()
    assert memory.data == SECRET_GPA
    assert memory.data + 2 * PAGE_SIZE == SPARE_GPA


# -- a lab -----------------------------------------------------------------------------------
def test_an_unbooted_lab(bundles: LabBundles, tmp_path: Path) -> None:
    lab = BootLab(Mode.SEV, bundles, random.Random(1).randbytes, tmp_path, boot=False)
    try:
        assert lab.traces == [] and lab.secret == b"" and lab.known_secrets() == {}
        with pytest.raises(StateError, match=r"^the VM has not been launched yet$"):
            _ = lab.guest
        with pytest.raises(StateError, match=r"^the VM has not been launched yet$"):
            lab.running()
        assert (lab.mode, lab.secret_gpa, lab.spare_gpa) == (Mode.SEV, SECRET_GPA, SPARE_GPA)
        assert lab.psp is lab.host.psp and lab.psp is not None
        # the host's PSP runs current firmware, committed: a rollback must be a reflash
        assert (lab.psp.current_tcb, lab.psp.committed_tcb) == (NEW_TCB, NEW_TCB)
        assert lab.psp.version == NEW_FIRMWARE
        bundle = lab.bundle()
        assert bundle.parent.parent == tmp_path and bundle.parent.name.startswith("cvm-lab-")
        assert not (bundle / "owner").exists() and (bundles.own_for(Mode.SEV) / "owner").is_dir()
        assert (bundle / "image.json").read_bytes() == (
            bundles.own_for(Mode.SEV) / "image.json").read_bytes()
        assert lab.old_release() == bundles.old_release
    finally:
        lab.close()
    assert not bundle.exists()


def test_the_genuine_boot(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    assert len(lab.traces) == 1
    trace = lab.traces[0]
    assert trace.refused is None and trace.workload_ok and trace.unsealed
    assert lab.guest is trace.guest and lab.running() is trace.vm
    known = lab.known_secrets()
    assert {"volume key", "workload data"} <= set(known)
    assert all(len(v) >= 8 and any(v) for v in known.values())
    assert lab.secret == known["workload data"]
    assert lab.guest_read(SECRET_GPA, len(lab.secret)) == lab.secret
    assert lab.party.released == 1


def test_a_genuine_boot_that_fails_is_refused(bundles: LabBundles, tmp_path: Path) -> None:
    broken = tmp_path / "own"
    shutil.copytree(bundles.own_for(Mode.SEV), broken)
    state = broken / str(manifest(broken)["vtpm"]["state"])
    state.write_bytes(b"\0" * len(state.read_bytes()))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(StateError, match=r"^the genuine sev boot failed at \w+: .+"):
        BootLab(Mode.SEV, replace(bundles, own={"host-vtpm": broken}),
                random.Random(2).randbytes, scratch)
    assert list(scratch.iterdir()) == []  # the host's copy went with the lab


def test_a_boot_reports_how_far_it_got(labs: Labs) -> None:
    lab = labs(Mode.SEV)
    assert lab.boot() == BootReport(True, True, True)
    assert len(lab.traces) == 2
    token = lab.bundle() / str(manifest(lab.bundle())["vtpm"]["state"])
    token.write_bytes(b"\0" * len(token.read_bytes()))  # the vTPM state, destroyed
    report = lab.boot()
    assert (report.booted, report.unsealed, report.workload) == (False, False, False)
    assert report.refused_by and report.error and report.error_class
    assert report.error == str(lab.traces[-1].refused[1])  # type: ignore[index]
    assert report.error_class == type(lab.traces[-1].refused[1]).__name__  # type: ignore[index]


def test_a_boot_refused_by_the_initramfs_still_booted(labs: Labs) -> None:
    from cvm.host.adversary.catalog import by_name

    lab = labs(Mode.PLAIN)
    booted: list[BootReport] = []
    original = lab.boot

    def boot() -> BootReport:
        booted.append(original())
        return booted[-1]

    lab.boot = boot  # type: ignore[method-assign]
    by_name("edit-token").perform(lab)
    assert booted[-1].refused_by == "initramfs" and booted[-1].booted
    assert not booted[-1].unsealed and not booted[-1].workload


def test_each_boot_starts_with_the_host_s_own_devices(labs: Labs) -> None:
    """The previous run's hooks go with it: only the host's own and the new run's answer."""
    lab = labs(Mode.SEV)
    first = lab.traces[0].run
    stale = lambda *args: None  # noqa: E731 — a device of the previous run
    lab.host.exit_hooks.append(stale)
    lab.boot()
    hooks = lab.host.exit_hooks
    assert stale not in hooks and first.record_exit not in hooks
    assert hooks[0] == lab.traces[-1].run.record_exit
    assert all(device in hooks for device in lab._devices)


def _policies(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    seen: list[int | None] = []
    boot = boot_lab.boot_bundle

    def recording(*args: Any, **kwargs: Any) -> VmTrace:
        seen.append(kwargs["policy"])
        return boot(*args, **kwargs)

    monkeypatch.setattr(boot_lab, "boot_bundle", recording)
    return seen


@pytest.mark.parametrize("mode, policy", [
    (Mode.SEV_SNP, DEFAULT_POLICY | 1 << 19),  # DEBUG allowed
    (Mode.SEV, 0),  # NODBG clear
    (Mode.SEV_ES, 0x4),  # ES, NODBG clear
    (Mode.PLAIN, 0),
])
def test_a_debug_launch_asks_for_a_debug_policy(
    labs: Labs, monkeypatch: pytest.MonkeyPatch, mode: Mode, policy: int
) -> None:
    lab = labs(mode)
    seen = _policies(monkeypatch)
    lab.launch(debug=True)
    lab.launch()
    lab.boot()
    assert seen == [policy, None, None]


def test_a_launch_without_attestation_says_what_the_host_s_vtpm_did(labs: Labs) -> None:
    lab = labs(Mode.SEV)
    assert lab.launch() == Release(True, False, detail="nothing appraised the launch; the "
                                   "host's vTPM unsealed the volume key")
    released = lab.launch(flip_firmware_bit=8 * 0x100 + 3)
    assert released.gated is False


def test_a_flipped_bit_is_that_bit_of_the_host_s_firmware(labs: Labs) -> None:
    lab = labs(Mode.SEV)
    firmware = lab.bundle() / str(manifest(lab.bundle())["firmware"]["ovmf"])
    before = firmware.read_bytes()
    owner = (lab.owner_folder / firmware.relative_to(lab.bundle())).read_bytes()
    lab.launch(flip_firmware_bit=8 * 0x20 + 5)
    after = firmware.read_bytes()
    assert after[0x20] == before[0x20] ^ 0x20
    assert after[:0x20] == before[:0x20] and after[0x21:] == before[0x21:]
    assert (lab.owner_folder / firmware.relative_to(lab.bundle())).read_bytes() == owner
    assert len(lab.traces) == 2


def test_a_refused_launch_without_attestation_says_where_it_stopped(labs: Labs) -> None:
    lab = labs(Mode.SEV)
    state = lab.bundle() / str(manifest(lab.bundle())["vtpm"]["state"])
    state.write_bytes(b"\0" * len(state.read_bytes()))
    released = lab.launch()
    stage, error = lab.traces[-1].refused  # type: ignore[misc]
    assert released == Release(False, False, detail="nothing appraised the launch; the host's "
                               f"vTPM did not unseal (stopped at {stage}: {error})")


def test_an_snp_launch_is_released_or_refused_by_the_relying_party(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    assert lab.launch() == Release(True, True, (), ACCEPTED)
    assert lab.party.released == 2
    refused = lab.launch(debug=True)
    assert not refused.released and refused.gated and "policy.debug" in refused.claims
    assert lab.party.released == 2


def test_a_rollback_reflashes_the_psp(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    refused = lab.launch(rollback=True)
    assert lab.psp is not None
    assert (lab.psp.current_tcb, lab.psp.version) == (OLD_TCB, OLD_FIRMWARE)
    assert not refused.released and "reported_tcb" in refused.claims


def test_forging_the_reference_values_under_sev_snp(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    path = lab.bundle() / "reference-values.json"
    lab.boot()  # an earlier boot, of the owner's firmware
    lab.launch(flip_firmware_bit=8 * 0x40, forge_reference=True)
    assert len(lab.traces) == 4  # once to learn the digest, once to launch
    digest = lab.traces[2].launch_measurement
    assert digest is not None and digest != lab.traces[1].launch_measurement
    entries = {e["mode"]: e["digest"] for e in json.loads(path.read_text())["launch"]}
    assert entries["sev-snp"] == digest.hex()


def test_forging_is_not_done_where_nothing_is_appraised(labs: Labs) -> None:
    lab = labs(Mode.SEV_ES)
    path = lab.bundle() / "reference-values.json"
    before = path.read_bytes()
    lab.launch(forge_reference=True)
    assert path.read_bytes() == before and len(lab.traces) == 2


def test_evidence_and_its_appraisal(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    nonce, evidence = lab.attest()
    assert len(nonce) == 64
    report = AttestationReport.from_bytes(evidence.report)
    assert report.report_data == nonce
    assert lab.psp is not None
    assert evidence.vcek == lab.vendor.vcek_certificate(lab.psp.chip_id, report.reported_tcb)
    assert evidence.cert_chain == lab.vendor.cert_chain()
    assert lab.appraise(evidence, nonce) == Release(True, True, (), ACCEPTED)
    other = bytes(64)
    refused = lab.appraise(evidence, other)
    assert not refused.released and refused.gated and refused.claims == ("report_data",)
    garbled = lab.appraise(Evidence(evidence.report, evidence.vcek, b""), nonce)
    assert garbled == Release(False, True, (), "FormatError: the cert chain holds 1 "
                              "certificates, expected ASK, ARK")
    other_chip = lab.vendor.vcek_certificate(lab.vendor.manufacture_chip(1).chip_id,
                                             report.reported_tcb)
    refused = lab.appraise(Evidence(evidence.report, other_chip, evidence.cert_chain), nonce)
    assert not refused.released and refused.claims in (("chain",), ("signature",))


def test_no_evidence_without_sev_snp(labs: Labs) -> None:
    lab = labs(Mode.SEV_ES)
    with pytest.raises(StateError, match=r"^a sev-es VM gives no SNP evidence$"):
        lab.attest()
    assert lab.appraise(Evidence(b"", b"", b""), b"") == Release(
        False, False, ("chain",), "no vendor root for this mode's evidence")
    assert lab.guest_request_report() == "no guest-request channel"


def test_a_guest_request(labs: Labs, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = labs(Mode.SEV_SNP)
    assert lab.guest_request_report() == "ok"
    svsm = lab.running().svsm
    assert svsm is not None

    def refuse(nonce: bytes) -> bytes:
        assert len(nonce) == 64
        raise FormatError("the response is short")

    monkeypatch.setattr(svsm, "report", refuse)
    assert lab.guest_request_report() == "FormatError: the response is short"


def test_the_guest_acts_through_its_vcpu(labs: Labs) -> None:
    lab = labs(Mode.SEV)
    lab.guest_write(SPARE_GPA, b"guest's own bytes")
    assert lab.guest_read(SPARE_GPA, 17) == b"guest's own bytes"
    assert lab.running().vcpu.read(SPARE_GPA, 17) == b"guest's own bytes"
    lab.guest_set_register("rbx", 0x1234)
    assert lab.guest_register("rbx") == 0x1234 == lab.running().vcpu.register("rbx")
    lab.guest_set_register("rflags", 0x246)
    lab.guest_interrupt_masked()
    assert lab.guest_register("rflags") == 0x046  # IF (bit 9) cleared, nothing else
    events = lab.guest_events()
    events.append(99)
    assert 99 not in lab.guest_events()
    exits = len(lab.running().vcpu.exits) if hasattr(lab.running().vcpu, "exits") else None
    lab.guest_exit()
    if exits is not None:
        assert len(lab.running().vcpu.exits) > exits


def test_cpuid_without_snp_is_the_host_s_answer(labs: Labs) -> None:
    lab = labs(Mode.SEV_ES)
    assert lab.guest_cpuid(0x8000001F) == lab.running().kernel.cpuid(0x8000001F)
    assert len(lab.traces) == 1


def test_cpuid_under_snp_is_the_page_the_psp_checked(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    values = lab.guest_cpuid(0x8000001F)
    assert len(lab.traces) == 2  # launched again
    vm = lab.running()
    assert vm.svsm is not None
    gpa = lab._cpuid_gpa()

    def read() -> bytes:
        return vm.vcpu.read(gpa, PAGE_SIZE)

    page = CpuidPage.from_bytes(vm.svsm.at_vmpl0(read))
    wanted = [(f.eax, f.ebx, f.ecx, f.edx) for f in page.functions
              if f.eax_in == 0x8000001F and f.ecx_in == 0]
    assert [values] == wanted and values != (0, 0, 0, 0)
    assert lab.guest_cpuid(0x4FFFFFFF) == (0, 0, 0, 0)  # a leaf the page does not hold


def test_a_rehomed_lab_copies_its_files_when_first_used(labs: Labs, tmp_path: Path) -> None:
    lab = labs(Mode.SEV)
    original = lab.bundle()
    foreign = lab.foreign_bundle()
    assert lab.foreign_bundle() == foreign  # made once
    lab.rehome(tmp_path)
    assert lab._copy_pending
    copy = lab.bundle()
    assert copy != original and copy.is_relative_to(tmp_path) and copy.name == "host"
    assert (copy / "image.json").read_bytes() == (original / "image.json").read_bytes()
    assert lab.foreign_bundle() != foreign and lab.foreign_bundle().is_relative_to(tmp_path)
    assert lab.foreign_bundle().name == "foreign"
    (copy / "image.json").write_bytes(b"changed")
    assert (original / "image.json").read_bytes() != b"changed"
    assert lab.bundle() == copy and not lab._copy_pending
    lab.close()
    assert original.exists()  # the original's folder is the original's
    assert not copy.exists()
    for handle in lab._inherited:  # the original's to clean (here the same process)
        handle.cleanup()


def test_a_rehomed_lab_boots_from_its_own_copy(labs: Labs, tmp_path: Path) -> None:
    lab = labs(Mode.PLAIN)
    original = lab.bundle()
    lab.rehome(tmp_path)
    lab.boot()
    assert lab.bundle().is_relative_to(tmp_path) and lab.bundle() != original
    assert lab.foreign_bundle().parent == lab.bundle().parent
    for handle in lab._inherited:
        handle.cleanup()


def test_the_other_owner_s_files(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    foreign = lab.foreign_bundle()
    assert foreign.parent == lab.bundle().parent and foreign.name == "foreign"
    assert not (foreign / "owner").exists()
    theirs = lab.bundles.foreign_for(Mode.SEV_SNP)
    assert (foreign / "image.json").read_bytes() == (theirs / "image.json").read_bytes()
    assert (foreign / "image.json").read_bytes() != (lab.bundle() / "image.json").read_bytes()


def test_what_the_host_holds(labs: Labs) -> None:
    lab = labs(Mode.SEV)
    lab.boot()
    files = lab.host_files()
    assert "image.json" in files and "reference-values.json" in files
    assert files["image.json"] == (lab.bundle() / "image.json").read_bytes()
    disk = [name for name in files if name.startswith("disk.img at 0x")]
    assert disk and "disk.img" not in files  # a sparse disk, read extent by extent
    for name in disk:
        offset = int(name.split(" at ")[1], 16)
        data = files[name]
        with (lab.bundle() / "disk.img").open("rb") as image:
            image.seek(offset)
            assert image.read(len(data)) == data
    logs = [name for name in files if name.startswith("host log of boot ")]
    assert logs == ["host log of boot 0", "host log of boot 1"]
    assert files["host log of boot 1"] == b"\n".join(lab.traces[1].run.log)
    assert not any(name.startswith("owner") for name in files)


def test_the_secrets_every_boot_held(labs: Labs) -> None:
    lab = labs(Mode.SEV)
    known = lab.known_secrets()
    trace = lab.traces[0]
    assert lab.secrets() == known
    trace.secrets = lambda: {"short": b"1234567", "zeros": bytes(8), "new": b"12345678"}
    assert lab.secrets() == {**known, "new": b"12345678"}

    def gone() -> dict[str, bytes]:
        raise StateError("the page was taken")

    trace.secrets = gone
    assert lab.secrets() == known
    lab.boot()  # a later boot still holds its secrets when an earlier one's page is gone
    lab.traces[-1].secrets = lambda: {"later": b"abcdefgh"}
    assert lab.secrets() == {**lab.known_secrets(), "later": b"abcdefgh"}


@pytest.mark.parametrize("mode", [Mode.SEV, Mode.SEV_SNP])
def test_each_boot_stores_the_vtpm_state_in_the_host_s_file(labs: Labs, mode: Mode) -> None:
    """What the VM's vTPM holds when the boot ends is written back to the host's state file
    (the state attacks take, keep and hand back that file)."""
    lab = labs(mode)
    name = str(manifest(lab.bundle())["vtpm"]["state"])
    original = (lab.owner_folder / name).read_bytes()
    after_first = (lab.bundle() / name).read_bytes()
    assert after_first != original
    lab.boot()
    assert (lab.bundle() / name).read_bytes() != after_first


def test_a_seeded_lab_boots_the_same_vm(bundles: LabBundles, tmp_path: Path) -> None:
    labs = [BootLab(Mode.SEV, bundles, random.Random(77).randbytes, tmp_path)
            for _ in range(2)]
    try:
        assert labs[0].secret == labs[1].secret and len(labs[0].secret) >= 8
        # the machine's keys too: the host reads the same ciphertext of the page
        pages = [read_guest_page(lab.host, lab.guest, SECRET_GPA) for lab in labs]
        assert pages[0] == pages[1] and labs[0].secret not in pages[0]
    finally:
        for lab in labs:
            lab.close()


def _secrets_of_each_boot(monkeypatch: pytest.MonkeyPatch,
                          secrets: Callable[[], dict[str, bytes]]) -> None:
    boot = boot_lab.boot_bundle

    def replaced(*args: Any, **kwargs: Any) -> VmTrace:
        trace = boot(*args, **kwargs)
        trace.secrets = secrets
        return trace

    monkeypatch.setattr(boot_lab, "boot_bundle", replaced)


def test_a_boot_keeps_only_secrets_worth_scanning_for(
    labs: Labs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight bytes or more, not all zero: a canary shorter than the scan's window, or of zeros,
    would match anything."""
    lab = labs(Mode.SEV)
    before = lab.known_secrets()
    _secrets_of_each_boot(monkeypatch, lambda: {
        "seven": b"1234567", "zeros": bytes(16), "eight": b"12345678",
        "nine": b"123456789", "one zero byte too few": b"\0" * 7 + b"\1"})
    lab.boot()
    assert lab.known_secrets() == {**before, "eight": b"12345678", "nine": b"123456789",
                                   "one zero byte too few": b"\0" * 7 + b"\1"}


@pytest.mark.parametrize("refusal", [
    StateError("the VM never started"),
    FaultRaised(Fault(FaultKind.NPF, 0x4000, Who.HOST, 0, "the page is gone")),
])
def test_a_boot_whose_secrets_cannot_be_read_is_reported(
    labs: Labs, monkeypatch: pytest.MonkeyPatch, refusal: Exception
) -> None:
    lab = labs(Mode.SEV)
    before = lab.known_secrets()

    def unreadable() -> dict[str, bytes]:
        raise refusal

    _secrets_of_each_boot(monkeypatch, unreadable)
    assert lab.boot() == BootReport(True, True, True)
    assert lab.known_secrets() == before


def test_the_host_s_view_is_of_the_lab_s_host(labs: Labs) -> None:
    lab = labs(Mode.SEV)
    assert lab.view.host is lab.host
    assert lab.view.exit_views  # it recorded the boot's exits
