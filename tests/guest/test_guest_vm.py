"""The guest's pieces inside a launched SEV-SNP VM: the PCR bank is the vTPM, the event log
lives in private guest pages, and a PCR the owner did not predict keeps the root closed."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from cvm.amd.pki import default_vendor
from cvm.errors import StateError, StatusError
from cvm.formats.initramfs import build_initramfs, parse_initramfs
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.replay import replay
from cvm.guest.boot.initramfs import Initramfs
from cvm.guest.boot.uki import extend_phase
from cvm.guest.run import HostRelayedBroker, relying_party
from cvm.guest.trace import VmTrace
from cvm.guest.vm import GuestVm
from cvm.host.vm_run import HostRun, VmRequest, launch, load_host_image
from cvm.image.reference_values import loads
from cvm.vtpm.state_file import MonotonicCounter

Seeded = Callable[[bytes], Callable[[int], bytes]]


def _booted(bundle: Path, seeded: Seeded) -> tuple[GuestVm, HostRun]:
    vendor = default_vendor("Milan")
    reference = loads((bundle / "reference-values.json").read_bytes())
    run = launch(load_host_image(bundle), VmRequest(), vendor.manufacture_chip(0))
    guest = GuestVm(run.bsp, seeded(b"guest"), VmTrace("sev-snp", 1))
    party = relying_party(bundle, reference, vendor, seeded(b"party"))
    assert run.secrets_gpa is not None
    guest.start_svsm(run.secrets_gpa, MonotonicCounter(), run.image.state,
                     HostRelayedBroker(party, vendor, run))
    guest.boot(run.disk, run.image.varstore, run.image.firmware)
    return guest, run


def test_every_measurement_is_in_the_vtpm_and_the_log_in_private_pages(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    guest, run = _booted(copy_bundle(uki_bundle), seeded)
    assert guest.pcrs is not None and guest.client is not None
    log = guest.log_area.load()
    live = {bank: guest.pcrs.values(tuple(range(24)), bank) for bank in ("sha1", "sha256")}
    for bank, values in replay(log).items():
        assert {pcr: live[bank][pcr] for pcr in values} == values
    # the log is in guest memory: the host reads ciphertext where the guest reads the log
    data = log.to_bytes()
    spa = run.guest.vm.translate(guest.log_area.gpa + 4)
    assert spa is not None
    assert data[:64] not in run.host.machine.host_read(spa, 0x1000)
    assert EventLog.parse(data) == log
    guest.vcpu.write(guest.log_area.gpa, (1 << 30).to_bytes(4, "little"))
    with pytest.raises(StateError, match="event log area is corrupt"):
        guest.log_area.load()


def test_a_pcr_the_owner_did_not_predict_keeps_the_root_closed(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    guest, _ = _booted(copy_bundle(uki_bundle), seeded)
    assert guest.pcrs is not None
    junk = b"a measurement nobody predicted"
    guest.pcrs.extend(7, {"sha1": hashlib.sha1(junk).digest(),
                          "sha256": hashlib.sha256(junk).digest()})
    with pytest.raises(StatusError, match="refused to unseal"):
        guest.open_root()
    assert guest.initramfs is not None and guest.initramfs.secrets() == {}


def test_the_genuine_boot_opens_the_root(uki_bundle: Path, copy_bundle: Callable[[Path], Path],
                                         seeded: Seeded) -> None:
    """The control of the test above: the same boot without the extra extend opens."""
    guest, _ = _booted(copy_bundle(uki_bundle), seeded)
    guest.open_root()
    guest.run_workload()
    assert guest.trace.workload is not None and guest.trace.workload.round_trip
    assert guest.trace.root is not None and "/srv/data/README" in guest.trace.root.files


def test_the_signed_pcr11_policy_follows_the_phases_the_owner_signed(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    """After systemd-pcrphase's "enter-initrd" PCR 11 still matches a signed policy in the
    UKI's .pcrsig; after anything else it matches none and the root stays closed."""
    bundle = copy_bundle(uki_bundle)
    guest, _ = _booted(bundle, seeded)
    assert guest.pcrs is not None
    extend_phase(guest.pcrs, "enter-initrd")
    guest.open_root()
    assert guest.trace.root is not None and guest.trace.root.policy == "signed"
    other, _ = _booted(bundle, seeded)
    assert other.pcrs is not None
    extend_phase(other.pcrs, "a phase nobody signed")
    with pytest.raises(StatusError, match=r"could unseal the root key: .*no signed policy for "
                                          r"the token's key and the live PCR 11"):
        other.open_root()


def test_an_initrd_that_names_another_root_does_not_open_this_one(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded) -> None:
    guest, _ = _booted(copy_bundle(uki_bundle), seeded)
    assert guest.boot_result is not None and guest.client is not None and guest.disk
    _, manifest = parse_initramfs(guest.boot_result.request.initrd)
    other = build_initramfs(replace(manifest, luks_uuid=str(uuid.UUID(int=7))), "ID=cvm\n")
    memory = guest.memory
    initramfs = Initramfs(guest.kernel, guest.client, guest.disk, other, guest.uki,
                          memory.key, memory.data, seeded(b"i"))
    with pytest.raises(StateError, match="asks for 00000000-0000-0000-0000-000000000007"):
        initramfs.open_root()
    assert initramfs.secrets() == {}
