"""One VM's boot as its trace tells it (:mod:`cvm.guest.vm`, :mod:`cvm.guest.run`): every step the
orchestration itself adds, word for word, per mode (the measurement steps come from the event
log and are checked elsewhere); what the host relays and logs; the phases timed; the stage a
refusal names; the order the guest's steps must come in; and what the guest counts as its
secrets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cvm.guest.run as run_module
import cvm.guest.vm as vm_module
from cvm.amd.pki import default_vendor
from cvm.attestation.verifier.appraisal import Verifier
from cvm.attestation.verifier.trust import TrustRoots
from cvm.cli.main import execute
from cvm.crypto.x509_chain import certificate_ders
from cvm.errors import FormatError, StateError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.tpm2.constants import TpmCc
from cvm.guest.boot.boot_disk import BootDisk
from cvm.guest.boot.firmware import DEFAULT_LOADER
from cvm.guest.boot.initramfs import WorkloadResult
from cvm.guest.run import boot_bundle, host_certificates, relying_party
from cvm.guest.trace import VmTrace, failures
from cvm.guest.vm import GuestVm
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.psp.sev_legacy import TIK_SIZE
from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import CanaryScan
from cvm.host.vm_run import (
    DEFAULT_POLICY,
    DRAM_BYTES,
    HostRun,
    VmRequest,
    host_view,
    launch,
    load_host_image,
)
from cvm.host.vmm import Hypervisor
from cvm.image.reference_values import loads
from cvm.vtpm.engine import Tpm

Seeded = Callable[[bytes], Callable[[int], bytes]]


def _own_steps(trace: VmTrace) -> list[tuple[str, str, str]]:
    """The steps the orchestration adds (not the event log's measurements)."""
    return [(s.actor, s.verb, s.subject) for s in trace.steps if s.pcr is None]


def _booted_steps(trace: VmTrace) -> list[tuple[str, str, str]]:
    """The steps every mode shares, from the loader to the workload."""
    assert trace.vm is not None and trace.vm.boot_result is not None and trace.root is not None
    request = trace.vm.boot_result.request
    return [
        ("uki", "started", f"{request.kernel_path} (cmdline: {request.cmdline})"),
        ("initramfs", "unsealed", "token 0 (signed policy, sha256 PCR 7+11) through the vTPM "
                                  "in a policy session"),
        ("initramfs", "opened", f"LUKS2 {trace.root.luks_uuid} keyslot 1 with dm-crypt; volume "
                                "key in a guest page"),
        ("workload", "wrote", "4096 secret bytes to /srv/data/log and read them back: equal"),
    ]


def test_a_sev_snp_boot_tells_each_step_and_the_host_logs_what_it_relayed(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    random = seeded(b"steps")
    trace = boot_bundle(copy_bundle(uki_bundle), "sev-snp", random=random, store_state=True,
                        policy=DEFAULT_POLICY)
    assert trace.ok and trace.launch_measurement is not None
    assert (trace.mode, trace.vcpus) == ("sev-snp", 1)
    assert trace.vm is not None and trace.vm.client is not None
    assert trace.vm.client.random is random  # the seeded run's nonces are the seed's
    assert trace.run.request.policy == DEFAULT_POLICY
    assert trace.run.request.tik is None  # a TIK is SEV's launch session key only
    chips = default_vendor("Milan")
    assert trace.run.psp.chip_id == chips.manufacture_chip(0).chip_id  # the vendor's chip 0
    assert trace.run.psp.chip_id != chips.manufacture_chip(1).chip_id
    assert _own_steps(trace) == [
        ("host", "launched", "a sev-snp VM through the PSP (1 vCPU(s))"),
        ("PSP", "measured", "the launch (equals the prediction): "
                            f"{trace.launch_measurement.hex()}"),
        ("SVSM", "attested", "to the relying party (SNP report at VMPL0, REPORT_DATA = "
                             "SHA-512(nonce ‖ ephemeral P-384 key))"),
        ("relying party", "released", "the vTPM state key, wrapped to the SVSM's ephemeral key"),
        ("SVSM", "opened", "the vTPM state (rollback counter 1)"),
        ("SVSM", "started", "the guest OS at VMPL1"),
        ("guest OS", "validated", "46 pages of its memory through SVSM_CORE_PVALIDATE"),
        *_booted_steps(trace),
        ("SVSM", "sealed", "the vTPM state for the host to store (counter advanced)"),
    ]
    assert set(trace.timings) == {"launch", "svsm", "esp", "boot chain", "initramfs",
                                  "workload", "trace"}
    assert trace.svsm_calls > 0
    log = [line.decode(errors="replace") for line in trace.run.log]
    relayed = [line.split(": ")[0] for line in log if line.startswith("relayed")]
    assert relayed == ["relayed a nonce from the relying party", "relayed the SVSM's report",
                       "relayed the wrapped state key"]


@pytest.mark.parametrize("mode", ["sev", "sev-es", "plain"])
def test_a_boot_on_the_hosts_vtpm_tells_each_step(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded,
        mode: str) -> None:
    trace = boot_bundle(copy_bundle(uki_bundle), mode, random=seeded(mode.encode()),
                        store_state=True)
    assert trace.ok and (trace.mode, trace.vcpus) == (mode, 1)
    tik = trace.run.request.tik
    assert (tik is None) if mode == "plain" else (tik is not None and len(tik) == TIK_SIZE)
    assert trace.run.request.policy is None
    launched = [("host", "launched", "a plain VM (no launch measurement)")]
    if mode != "plain":
        assert trace.launch_measurement is not None
        launched = [("host", "launched", f"a {mode} VM through the PSP (1 vCPU(s))"),
                    ("PSP", "measured", "the launch (equals the prediction): "
                                        f"{trace.launch_measurement.hex()}")]
    assert _own_steps(trace) == [
        *launched,
        ("firmware", "found", "the host's vTPM (outside the TEE)"),
        *_booted_steps(trace),
        ("host", "sealed", "its vTPM's state under the key it holds"),
    ]
    assert set(trace.timings) == {"launch", "tpm", "esp", "boot chain", "initramfs",
                                  "workload", "trace"}
    assert trace.svsm_calls == 0


SHUTDOWN_CLEAR = bytes.fromhex("80010000000c000001450000")  # TPM2_Shutdown(TPM_SU_CLEAR)


def test_storing_the_state_shuts_the_vtpm_down_orderly_first(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    """The host logs each command its vTPM runs: the OS sends TPM2_Shutdown(CLEAR) before
    the state is sealed (and not when it is not stored); the guest's last stage is then the
    shutdown."""
    trace = boot_bundle(copy_bundle(uki_bundle), "sev", random=seeded(b"shutdown"),
                        store_state=True)
    assert trace.ok and trace.vm is not None and trace.vm.stage == "shutdown"
    assert SHUTDOWN_CLEAR in trace.run.log
    unstored = boot_bundle(uki_bundle, "sev", random=seeded(b"shutdown"))
    assert unstored.vm is not None and unstored.vm.stage == "workload"
    assert SHUTDOWN_CLEAR not in unstored.run.log


@pytest.mark.parametrize("mode", ["sev", "sev-es"])
def test_under_sev_and_sev_es_the_host_reads_neither_the_key_nor_the_data(
        uki_bundle: Path, seeded: Seeded, mode: str) -> None:
    """The guest OS accepts all its pages as private (C-bit set) before it uses any: the
    volume key and the workload's data are ciphertext to the host."""
    trace = boot_bundle(uki_bundle, mode, random=seeded(b"private " + mode.encode()))
    secrets = trace.secrets()
    assert trace.ok and {"volume key", "workload data"} <= set(secrets)
    leaks = CanaryScan(secrets).scan_all(host_view(trace.run).items())
    assert next(iter(leaks), None) is None


def _plain_guest(bundle: Path, seeded: Seeded) -> tuple[GuestVm, HostRun, Callable[[int], bytes]]:
    run = launch(load_host_image(bundle), VmRequest(Mode.PLAIN),
                 default_vendor("Milan").manufacture_chip(0))
    random = seeded(b"stages")
    return GuestVm(run.bsp, random, VmTrace("plain", 1)), run, random


def test_each_step_needs_the_one_before_and_the_stage_follows_the_guest(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    guest, run, random = _plain_guest(copy_bundle(uki_bundle), seeded)
    assert guest.stage == "start"
    guest.finish()  # no vTPM yet: nothing to read, nothing refused
    assert guest.trace.pcrs == {} and guest.trace.event_log == b""
    with pytest.raises(StateError, match=r"^start the vTPM before booting$"):
        guest.boot(run.disk, run.image.varstore, run.image.firmware)
    with pytest.raises(StateError, match=r"^boot before opening the root$"):
        guest.open_root()
    with pytest.raises(StateError, match=r"^open the root before running the workload$"):
        guest.run_workload()
    guest.start_host_tpm()
    assert guest.stage == "firmware"
    assert guest.client is not None and guest.client.random is random
    guest.finish()  # a vTPM, but no boot yet: no PCR bank to read
    assert guest.trace.pcrs == {} and guest.trace.event_log == b""
    with pytest.raises(StateError, match=r"^boot before opening the root$"):
        guest.open_root()  # the vTPM alone is not enough
    guest.boot(run.disk, run.image.varstore, run.image.firmware)
    assert guest.stage == "firmware"
    guest.open_root()
    assert guest.stage == "initramfs"
    guest.run_workload()
    assert guest.stage == "workload"


def test_a_refused_boot_names_the_firmware_and_leaves_the_root_closed(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    """The signed UKI altered on the disk: Secure Boot refuses it after the disk was opened;
    the root cannot be opened after that (no boot result, though the disk is open)."""
    bundle = copy_bundle(uki_bundle)
    _, run, _ = _plain_guest(bundle, seeded)
    uki = BootDisk.open(run.disk).esp_files().read(DEFAULT_LOADER)
    image = bundle / "disk.img"
    data = bytearray(image.read_bytes())
    at = data.find(uki[:0x4000])
    assert at > 0
    data[at + 0x3000] ^= 1
    image.write_bytes(data)
    trace = boot_bundle(bundle, "plain", random=seeded(b"refused"))
    assert trace.refused is not None and trace.refused[0] == "firmware"
    assert trace.vm is not None and trace.vm.disk is not None and trace.vm.boot_result is None
    with pytest.raises(StateError, match=r"^boot before opening the root$"):
        trace.vm.open_root()


def test_a_workload_whose_data_does_not_come_back_is_told_different(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded,
        monkeypatch: pytest.MonkeyPatch) -> None:
    guest, run, _ = _plain_guest(copy_bundle(uki_bundle), seeded)
    guest.start_host_tpm()
    guest.boot(run.disk, run.image.varstore, run.image.firmware)
    guest.open_root()
    assert guest.initramfs is not None
    monkeypatch.setattr(guest.initramfs, "run_workload",
                        lambda: WorkloadResult("/srv/data/log", 4096, False, "00" * 32))
    guest.run_workload()
    assert _own_steps(guest.trace)[-1] == (
        "workload", "wrote", "4096 secret bytes to /srv/data/log and read them back: DIFFERENT")


def test_a_phase_timed_twice_adds_up(uki_bundle: Path, copy_bundle: Callable[[Path], Path],
                                     seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fixed clock (no real time is compared): each phase adds now − started."""
    guest, _, _ = _plain_guest(copy_bundle(uki_bundle), seeded)
    monkeypatch.setattr(vm_module.time, "perf_counter", lambda: 10.0)
    guest._phase("esp", 4.0)
    guest._phase("esp", 7.0)
    guest._phase("tpm", 9.5)
    assert guest.trace.timings == {"esp": 9.0, "tpm": 0.5}


def test_the_relying_party_trusts_the_vendors_root_and_reads_the_owners_folder(
        uki_bundle: Path, tmp_path: Path, seeded: Seeded) -> None:
    vendor = default_vendor("Milan")
    reference = loads((uki_bundle / "reference-values.json").read_bytes())
    expected = TrustRoots.of([vendor.trust_anchor()], "emulated")
    made: list[TrustRoots] = []
    custom = Verifier(expected)

    def factory(roots: TrustRoots) -> Verifier:
        made.append(roots)
        return custom

    party = relying_party(uki_bundle, reference, vendor, seeded(b"party"), factory)
    assert party.verifier is custom and made == [expected] and made[0].label == "emulated"
    default = relying_party(uki_bundle, reference, vendor, seeded(b"party"))
    assert type(default.verifier) is Verifier and default.verifier.roots == expected
    with pytest.raises(UsageError, match=r"^the relying party needs the owner's "
                                         rf"{tmp_path}/owner/provisioning\.key$"):
        relying_party(tmp_path, reference, vendor, seeded(b"party"))


def test_the_host_logs_the_vcek_chain_it_supplies(uki_bundle: Path, seeded: Seeded) -> None:
    trace = boot_bundle(uki_bundle, "sev-snp", random=seeded(b"chain"))
    prefix = b"relayed the SVSM's report: "
    report = bytes.fromhex(next(line for line in trace.run.log
                                if line.startswith(prefix))[len(prefix):].decode())
    vendor = default_vendor("Milan")
    vcek, ask, ark = host_certificates(vendor, trace.run)(report)
    assert trace.run.log[-1] == b"supplied the VCEK chain for the SVSM's report: " + (
        report.hex().encode())
    assert (ask, ark) == tuple(certificate_ders(vendor.cert_chain()))
    assert vcek == certificate_ders(vendor.vcek_certificate(
        trace.run.psp.chip_id, AttestationReport.from_bytes(report).reported_tcb))[0]


def test_a_sev_launch_the_owner_did_not_predict_is_told_differs(uki_bundle: Path,
                                                                seeded: Seeded) -> None:
    """Two vCPUs where the owner predicted one: no prediction for the launch, so SEV's
    LAUNCH_MEASURE (its 32-byte HMAC) cannot be accepted — the VM still runs, as SEV does."""
    trace = boot_bundle(uki_bundle, "sev", vcpus=2, random=seeded(b"two"))
    assert trace.predicted_measurement is None and trace.launch_accepted is False
    assert trace.launch_measurement is not None and len(trace.launch_measurement) == 32
    assert _own_steps(trace)[:2] == [
        ("host", "launched", "a sev VM through the PSP (2 vCPU(s))"),
        ("PSP", "measured", "the launch (DIFFERS from the prediction): "
                            f"{trace.launch_measurement.hex()}")]
    assert trace.workload_ok and not trace.ok


@pytest.mark.parametrize("mode", ["plain", "sev", "sev-es"])
def test_a_key_broker_is_only_for_sev_snp(uki_bundle: Path, mode: str) -> None:
    with pytest.raises(UsageError, match=rf"^--kbs: the SVSM attests to the broker; {mode} has "
                                         r"no SVSM \(use sev-snp\)$"):
        boot_bundle(uki_bundle, mode, kbs="http://127.0.0.1:9")


def test_only_a_uki_boot_hands_the_initramfs_the_uki(uki_bundle: Path, shim_bundle: Path,
                                                    seeded: Seeded) -> None:
    """The initramfs reads the signed PCR policy (.pcrsig) from the UKI the firmware
    verified; after shim → GRUB there is no UKI, and it gets none (not shim's bytes)."""
    trace = boot_bundle(uki_bundle, "plain", random=seeded(b"uki"))
    assert trace.ok and trace.vm is not None and trace.vm.disk is not None
    assert trace.vm.uki == trace.vm.disk.esp_files().read(DEFAULT_LOADER)
    shim = boot_bundle(shim_bundle, "sev-snp", random=seeded(b"shim"))
    assert shim.ok and shim.vm is not None and shim.vm.uki is None


def test_the_vm_runs_on_the_host_given_and_its_launch_is_timed(
        uki_bundle: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fixed clock (no real time is compared) every phase, the launch included, lasts
    now − started = 0."""
    machine = Machine(DRAM_BYTES)
    host = Hypervisor(machine, SecureProcessor(machine, default_vendor("Milan")
                                               .manufacture_chip(0)))
    monkeypatch.setattr(run_module.time, "perf_counter", lambda: 5.0)
    trace = boot_bundle(uki_bundle, "plain", host=host, random=seeded(b"host"))
    assert trace.ok and trace.host is host
    assert trace.timings["launch"] == 0.0 and set(trace.timings.values()) == {0.0}


@pytest.mark.parametrize(("mode", "expected", "downgraded"), [("sev", 0x1, 0x0),
                                                              ("sev-es", 0x5, 0x4)])
def test_a_sev_launch_under_another_policy_is_not_accepted(
        uki_bundle: Path, seeded: Callable[[bytes], Callable[[int], bytes]], mode: str,
        expected: int, downgraded: int) -> None:
    """SEV's launch MAC covers the policy: the owner recomputes it with the policy it expects
    (QEMU's default, NODBG), so a host that launched with debugging allowed is told apart."""
    same = boot_bundle(uki_bundle, mode, random=seeded(b"policy"), policy=expected)
    assert same.launch_accepted
    other = boot_bundle(uki_bundle, mode, random=seeded(b"policy"), policy=downgraded)
    assert other.launch_accepted is False
    assert ("PSP", "measured") in [(step.actor, step.verb) for step in other.steps]


def _lying_pcr_reads(monkeypatch: pytest.MonkeyPatch, after_workload: bool) -> None:
    """The host's vTPM answers TPM2_PCR_Read one digest short (from the moment the workload
    has run, or always)."""
    lying = [not after_workload]
    execute, run_workload = Tpm.execute, GuestVm.run_workload

    def answer(tpm: Tpm, data: bytes, locality: int = 0) -> bytes:
        reply = execute(tpm, data, locality)
        read = int.from_bytes(data[6:10], "big") == TpmCc.PCR_READ
        return reply[:-32] if read and lying[0] else reply

    def workload(guest: GuestVm) -> None:
        run_workload(guest)
        lying[0] = True
    monkeypatch.setattr(Tpm, "execute", answer)
    monkeypatch.setattr(GuestVm, "run_workload", workload)


def test_a_trace_the_guest_cannot_read_refuses_the_boot(
        uki_bundle: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    _lying_pcr_reads(monkeypatch, after_workload=True)
    trace = boot_bundle(uki_bundle, "plain", random=seeded(b"lying trace"))
    assert trace.workload_ok and not trace.ok
    assert trace.refused is not None
    assert trace.refused[0] == "trace" and isinstance(trace.refused[1], FormatError)
    assert "REFUSED at trace: " in trace.render()


def test_the_refusal_that_stopped_the_boot_is_the_one_told(
        uki_bundle: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    _lying_pcr_reads(monkeypatch, after_workload=False)
    trace = boot_bundle(uki_bundle, "plain", random=seeded(b"lying boot"))
    assert trace.refused is not None and trace.refused[0] == "initramfs"
    assert str(trace.refused[1]).startswith("initramfs: none of 1 token(s) could unseal")
    assert trace.pcrs == {}  # the trace's own PCR_Read failed too, and is not what is told


def _write_launch_digest(path: Path, digest: bytes) -> None:
    document = json.loads(path.read_text())
    for entry in document["launch"]:
        if entry["mode"] == "sev-snp":
            entry["digest"] = digest.hex()
    path.write_text(json.dumps(document))


def test_the_hosts_copy_of_the_reference_values_is_not_what_the_owner_appraises_with(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    """The host flips a bit of the firmware and writes the launch digest it measured into the
    reference values beside the image: the owner's relying party appraises with its own copy
    in owner/, and refuses. The same edit made to the owner's copy (the control) is accepted."""
    bundle = copy_bundle(uki_bundle)
    firmware = bytearray((bundle / "firmware" / "OVMF.fd").read_bytes())
    firmware[0x2000] ^= 0x40
    (bundle / "firmware" / "OVMF.fd").write_bytes(firmware)
    first = boot_bundle(bundle, "sev-snp", random=seeded(b"forge 1"))
    assert first.refused is not None and "measurement differs" in str(first.refused[1])
    assert first.launch_measurement is not None
    _write_launch_digest(bundle / "reference-values.json", first.launch_measurement)
    forged = boot_bundle(bundle, "sev-snp", random=seeded(b"forge 2"))
    assert forged.refused is not None and forged.refused[0] == "svsm"
    assert "measurement differs" in str(forged.refused[1]) and not forged.unsealed
    _write_launch_digest(bundle / "owner" / "reference-values.json", first.launch_measurement)
    assert boot_bundle(bundle, "sev-snp", random=seeded(b"forge 3")).unsealed


def test_the_owners_relying_party_needs_the_owners_copy(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path]) -> None:
    bundle = copy_bundle(uki_bundle)
    (bundle / "owner" / "reference-values.json").unlink()
    with pytest.raises(UsageError, match=r"^the relying party needs the owner's .*"
                                         r"owner/reference-values\.json \(a bundle built"):
        boot_bundle(bundle, "sev-snp")


def _edit_owner_reference(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = bundle / "owner" / "reference-values.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def test_a_pcr_that_differs_from_the_owners_prediction_is_told_and_not_ok(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The owner predicted another PCR 4 (a PCR the root's token is not sealed to): the VM
    boots and its workload runs, but the trace says the PCR differs, and `cvm vm run` exits 1."""
    bundle = copy_bundle(uki_bundle)

    def other_pcr4(document: dict[str, Any]) -> None:
        document["pcrs"]["sha256"]["4"] = "44" * 32
    _edit_owner_reference(bundle, other_pcr4)
    trace = boot_bundle(bundle, "plain", random=seeded(b"pcr 4"))
    assert trace.refused is None and trace.workload_ok and trace.unsealed
    assert not trace.pcrs_match and not trace.ok
    live = trace.pcrs["sha256"][4]
    assert live == trace.replayed["sha256"][4] != bytes.fromhex("44" * 32)
    lines = trace.render().splitlines()
    assert f"  sha256 PCR  4 {live.hex()[:16]}…  prediction DIFFERS, replayed log equal" in lines
    assert "  sha256 PCR  7 " in "\n".join(lines)
    assert [line for line in lines if "DIFFERS" in line] == [
        f"  sha256 PCR  4 {live.hex()[:16]}…  prediction DIFFERS, replayed log equal"]
    assert lines[-2] == "NOT VERIFIED: sha256 PCR 4 differs from the prediction"
    assert trace.to_json()["failures"] == ["sha256 PCR 4 differs from the prediction"]
    assert execute(["vm", "run", str(bundle), "--mode", "plain"]) == 1
    captured = capsys.readouterr()
    assert "NOT VERIFIED: sha256 PCR 4 differs from the prediction\n" in captured.out
    assert "OK: every stage" not in captured.out and captured.err == ""


def test_a_sev_launch_digest_that_differs_is_not_accepted_and_told(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The owner predicted another SEV launch digest: the host's PSP measured the real one, so
    the MAC the owner recomputes differs — the VM runs (SEV attests nothing before boot), and
    the trace says the launch DIFFERS and is not ok; the PCRs still equal the prediction."""
    bundle = copy_bundle(uki_bundle)

    def other_digest(document: dict[str, Any]) -> None:
        for entry in document["launch"]:
            if entry["mode"] == "sev":
                entry["digest"] = "5e" * 32
    _edit_owner_reference(bundle, other_digest)
    trace = boot_bundle(bundle, "sev", random=seeded(b"sev digest"))
    assert trace.predicted_measurement == bytes.fromhex("5e" * 32)
    assert trace.launch_accepted is False and trace.launch_measurement is not None
    assert trace.refused is None and trace.workload_ok and trace.pcrs_match and not trace.ok
    lines = trace.render().splitlines()
    subject = f"the launch (DIFFERS from the prediction): {trace.launch_measurement.hex()}"
    assert f"          PSP  measured  {subject[:71]}…" in lines
    assert lines[-2] == "NOT VERIFIED: the launch measurement differs from the prediction"
    assert not any("prediction DIFFERS" in line for line in lines)
    assert execute(["vm", "run", str(bundle), "--mode", "sev"]) == 1
    assert "NOT VERIFIED: the launch measurement" in capsys.readouterr().out


def test_a_relying_party_given_judges_the_trace_by_the_owners_copy_else_the_hosts(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    """With a relying party given (it holds its own reference values), the trace's predictions
    come from the owner's copy in owner/ when the folder has it — not from the host's copy,
    which the host edited — and from the host's copy only when there is no owner's copy."""
    bundle = copy_bundle(uki_bundle)
    owner = loads((bundle / "owner" / "reference-values.json").read_bytes())
    host_copy = bundle / "reference-values.json"
    document = json.loads(host_copy.read_text())
    document["pcrs"]["sha256"]["4"] = "44" * 32
    host_copy.write_text(json.dumps(document))
    party = relying_party(bundle, owner, default_vendor("Milan"), seeded(b"given party"))
    trace = boot_bundle(bundle, "sev-snp", random=seeded(b"given 1"), party=party)
    assert trace.predicted["sha256"][4] == owner.pcrs["sha256"][4] != bytes.fromhex("44" * 32)
    assert trace.ok
    (bundle / "owner" / "reference-values.json").unlink()
    trace = boot_bundle(bundle, "sev-snp", random=seeded(b"given 2"), party=party)
    assert trace.predicted["sha256"][4] == bytes.fromhex("44" * 32)
    assert trace.unsealed and trace.workload_ok  # the party appraised with its own values
    assert failures(trace) == ["sha256 PCR 4 differs from the prediction"] and not trace.ok
