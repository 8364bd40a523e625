"""One confidential VM end to end, per mode: build → launch → boot → unseal → workload.

The workload's data round-trips through the encrypted root; the PCRs the vTPM holds equal the
owner's prediction and the replay of the event log the firmware left in guest memory; the
launch measurement is the predicted one. And what the host can read holds no secret wherever
the mode must protect it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.errors import IntegrityError, PolicyError
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.tcg.event_log import EventLog
from cvm.guest.run import boot_bundle
from cvm.guest.trace import VmTrace
from cvm.hardware.vcpu import EXIT_CPUID, EXIT_VMGEXIT
from cvm.host.adversary.canary import CanaryScan
from cvm.host.vm_run import host_view
from cvm.image.bundle import ImageSpec, build_image
from cvm.image.reference_values import loads
from cvm.vtpm.state_file import MonotonicCounter

ALL_MODES = ("plain", "sev", "sev-es", "sev-snp")
Seeded = Callable[[bytes], Callable[[int], bytes]]


def _check_ok(trace: VmTrace, bundle: Path) -> None:
    assert trace.refused is None, trace.refused
    assert trace.workload is not None and trace.workload.round_trip
    reference = loads((bundle / "reference-values.json").read_bytes())
    for bank, values in reference.pcrs.items():
        assert {p: trace.pcrs[bank][p] for p in values} == dict(values)
        assert {p: trace.replayed[bank][p] for p in values} == dict(values)
    assert trace.pcrs_match and trace.ok
    assert EventLog.parse(trace.event_log).to_bytes() == trace.event_log
    assert trace.extends == len([e for e in EventLog.parse(trace.event_log).events
                                 if e.event_type != 3])  # every measurement reached the vTPM


@pytest.mark.parametrize("mode", ALL_MODES)
def test_the_vm_boots_unseals_and_runs_its_workload(uki_bundle: Path, mode: str,
                                                    seeded: Seeded) -> None:
    trace = boot_bundle(uki_bundle, mode, random=seeded(mode.encode()))
    _check_ok(trace, uki_bundle)
    assert trace.stages == ("firmware", "uki", "linux")
    assert trace.root is not None and trace.root.policy == "signed"
    if mode == "plain":
        assert trace.launch_accepted is None
    else:
        assert trace.launch_accepted is True
    assert (trace.svsm_calls > trace.extends) == (mode == "sev-snp")
    assert "REFUSED" not in trace.render() and trace.to_json()["ok"] is True


def test_the_shim_grub_chain_boots_under_sev_snp(shim_bundle: Path, seeded: Seeded) -> None:
    trace = boot_bundle(shim_bundle, "sev-snp", random=seeded(b"shim"))
    _check_ok(trace, shim_bundle)
    assert trace.stages == ("firmware", "shim", "grub", "linux")
    assert trace.root is not None and trace.root.pcrs == (4, 7, 8, 9)
    assert {s.actor for s in trace.steps} >= {"GRUB", "SVSM", "relying party", "initramfs"}


def _leaks(trace: VmTrace) -> list[str]:
    secrets = trace.secrets()
    assert {"volume key", "workload data"} <= set(secrets)
    return [str(leak) for leak in CanaryScan(secrets).scan_all(host_view(trace.run).items())]


def test_under_sev_snp_the_host_reads_no_secret(uki_bundle: Path, seeded: Seeded) -> None:
    trace = boot_bundle(uki_bundle, "sev-snp", random=seeded(b"scan"))
    assert trace.ok
    assert {"vTPM state key", "VMPCK0"} <= set(trace.secrets())
    assert _leaks(trace) == []


def test_in_a_plain_vm_the_host_reads_the_key_and_the_data(uki_bundle: Path,
                                                           seeded: Seeded) -> None:
    """The positive control of the scan above: the same scan finds them in a plain VM."""
    trace = boot_bundle(uki_bundle, "plain", random=seeded(b"scan"))
    assert trace.ok
    found = " ".join(_leaks(trace))
    assert "volume key" in found and "workload data" in found


def test_other_firmware_gets_no_state_key(uki_bundle: Path, copy_bundle: Callable[[Path], Path],
                                          seeded: Seeded) -> None:
    bundle = copy_bundle(uki_bundle)
    firmware = bytearray((bundle / "firmware" / "OVMF.fd").read_bytes())
    firmware[0x1234] ^= 1
    (bundle / "firmware" / "OVMF.fd").write_bytes(firmware)
    trace = boot_bundle(bundle, "sev-snp", random=seeded(b"fw"))
    assert trace.launch_accepted is False
    assert trace.refused is not None and trace.refused[0] == "svsm"
    assert isinstance(trace.refused[1], PolicyError)
    assert "measurement" in {f.claim for f in trace.refused[1].findings}
    assert not trace.unsealed and trace.workload is None


def test_an_edited_state_file_does_not_open(uki_bundle: Path,
                                            copy_bundle: Callable[[Path], Path],
                                            seeded: Seeded) -> None:
    bundle = copy_bundle(uki_bundle)
    state = bytearray((bundle / "vtpm-state.bin").read_bytes())
    state[-1] ^= 1
    (bundle / "vtpm-state.bin").write_bytes(state)
    trace = boot_bundle(bundle, "sev-snp", random=seeded(b"state"))
    assert trace.refused is not None and trace.refused[0] == "svsm"
    assert isinstance(trace.refused[1], IntegrityError)


def test_the_state_moves_forward_and_an_old_copy_is_refused(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    bundle = copy_bundle(uki_bundle)
    first = (bundle / "vtpm-state.bin").read_bytes()
    counter = MonotonicCounter()
    trace = boot_bundle(bundle, "sev-snp", random=seeded(b"a"), counter=counter,
                        store_state=True)
    assert trace.ok and counter.read() == 2  # opened at 1, sealed again at 2
    assert (bundle / "vtpm-state.bin").read_bytes() != first
    assert boot_bundle(bundle, "sev-snp", random=seeded(b"b"), counter=counter).ok
    (bundle / "vtpm-state.bin").write_bytes(first)  # the host hands back the old copy
    trace = boot_bundle(bundle, "sev-snp", random=seeded(b"c"), counter=counter)
    assert trace.refused is not None and isinstance(trace.refused[1], PolicyError)
    assert "rollback" in str(trace.refused[1])


def test_the_hosts_vtpm_state_is_the_hosts_to_roll_back(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    bundle = copy_bundle(uki_bundle)
    first = (bundle / "vtpm-state.bin").read_bytes()
    assert boot_bundle(bundle, "sev-es", random=seeded(b"a"), store_state=True).ok
    assert (bundle / "vtpm-state.bin").read_bytes() != first
    assert boot_bundle(bundle, "sev-es", random=seeded(b"again"), store_state=True).ok
    (bundle / "vtpm-state.bin").write_bytes(first)
    assert boot_bundle(bundle, "sev-es", random=seeded(b"b")).ok  # nothing stops it


def test_an_8_byte_register_leak_through_the_ghcb_is_in_the_hosts_view(
        uki_bundle: Path, seeded: Seeded) -> None:
    """Positive control for the scan: the guest copies 8 bytes of the volume key into a GHCB
    register at one exit; the next exit's answer overwrites the page, yet the host kept it."""
    trace = boot_bundle(uki_bundle, "sev-snp", random=seeded(b"leak"))
    assert trace.ok and _leaks(trace) == []
    guest, key = trace.vm, trace.secrets()["volume key"]
    svsm, cpu = guest.svsm, guest.vcpu
    ghcb = svsm.layout.ghcb_gpa

    def leak() -> None:
        cpu.write(ghcb, Ghcb.build(rax=1, rbx=int.from_bytes(key[8:16], "little"),
                                   sw_exitcode=EXIT_CPUID).to_bytes())
        cpu.ghcb_msr = ghcb
        cpu.vmexit(EXIT_VMGEXIT)

    svsm.at_vmpl0(leak)
    assert key[8:16] not in trace.run.host.machine.host_read(
        trace.run.guest.vm.translate(ghcb), 0x1000)  # the host's answer overwrote it
    assert any("volume key" in leak and "GHCB" in leak for leak in _leaks(trace))


def test_two_vcpus_launch_as_predicted_and_one_does_not(tmp_path: Path, uki_bundle: Path,
                                                        seeded: Seeded) -> None:
    bundle = tmp_path / "two"
    build_image(bundle, ImageSpec(vcpus=2, kdf_cost="fast", seed=9))
    trace = boot_bundle(bundle, "sev-snp", vcpus=2, random=seeded(b"two"))
    assert trace.ok and len(trace.guest.vcpus) == 2
    wrong = boot_bundle(uki_bundle, "sev-snp", vcpus=2, random=seeded(b"wrong"))
    assert wrong.launch_accepted is False and wrong.refused is not None
    assert wrong.refused[0] == "svsm" and isinstance(wrong.refused[1], PolicyError)


def test_what_is_not_a_bundle_is_refused_at_launch(tmp_path: Path, uki_bundle: Path,
                                                   copy_bundle: Callable[[Path], Path],
                                                   seeded: Seeded) -> None:
    bundle = copy_bundle(uki_bundle)
    (bundle / "firmware" / "SVSM.bin").unlink()
    trace = boot_bundle(bundle, "sev-snp", random=seeded(b"x"))
    assert trace.refused is not None and trace.refused[0] == "launch"
    assert "SVSM.bin" in str(trace.refused[1])
    (bundle / "host-vtpm-state.key").unlink()
    refused = boot_bundle(bundle, "sev", random=seeded(b"y")).refused
    assert refused is not None and "host-vtpm-state.key" in str(refused[1])


def test_sev_boots_other_firmware_but_the_owner_sees_the_measure_differ(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    """SEV has no attestation before boot: the VM runs, and only the owner's check of the
    LAUNCH_MEASURE HMAC against its prediction says the firmware is not the one it built."""
    bundle = copy_bundle(uki_bundle)
    firmware = bytearray((bundle / "firmware" / "OVMF.fd").read_bytes())
    firmware[0x1234] ^= 1
    (bundle / "firmware" / "OVMF.fd").write_bytes(firmware)
    trace = boot_bundle(bundle, "sev", random=seeded(b"sev"))
    assert trace.launch_accepted is False and not trace.ok
    assert trace.workload_ok  # PCR 0 changed, but the token is sealed to PCR 7 and 11
    assert trace.pcrs["sha256"][0] != trace.predicted["sha256"][0]
