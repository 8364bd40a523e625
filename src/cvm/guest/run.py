"""One confidential VM, end to end: the host launches it, the guest boots and runs its workload,
the owner's relying party releases the vTPM state key — three parties joined in one process.

Each party keeps to its side: the host (:mod:`cvm.host.vm_run`) is handed the bundle's bytes
and never the ``owner/`` folder; the guest (:mod:`cvm.guest.vm`) gets from the host only what a
guest can (a disk, its firmware, its varstore, the sealed state); the relying party
(:class:`cvm.image.provisioning.RelyingParty`, owner side) reads the owner's provisioning key
and the reference values and sees the SVSM's report and public key, relayed by the host with
the VCEK chain the host fetched. A refusal anywhere ends the run with the stage and the error in
the trace — :func:`boot_bundle` never raises for a refused boot, so attacks can be judged.

With ``kbs`` (``cvm vm run IMAGE --kbs URL``) the relying party is a key broker service instead:
the SVSM's agent (:class:`cvm.guest.svsm.kbs_agent.KbsAgent`) speaks Trustee's RCAR protocol
to it, through the host's network (:class:`cvm.host.relay.NetworkRelay`: the host relays the
bytes and supplies the VCEK chain; its log keeps the whole transcript), the broker holds the
vTPM state's rollback counter (:class:`cvm.guest.svsm.kbs_counter.KbsCounter`: read inside the
key's JWE, advanced by MAC'd compare-and-set), and the image must have been registered with the
broker (``cvm image register``).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from cvm.amd.pki import Vendor, default_vendor
from cvm.attestation.verifier.appraisal import Evidence, Verifier
from cvm.attestation.verifier.trust import TrustRoots
from cvm.errors import CvmError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.guest.svsm.kbs_agent import DEFAULT_RESOURCE, KbsAgent
from cvm.guest.svsm.kbs_counter import KbsCounter
from cvm.guest.trace import VmTrace
from cvm.guest.vm import GuestVm
from cvm.hardware.psp.sev_legacy import TIK_SIZE, measure_mac
from cvm.hardware.vm import Mode
from cvm.host.relay import NetworkRelay
from cvm.host.vm_run import DEFAULT_MEMORY, HostRun, VmRequest, launch, load_host_image
from cvm.host.vmm import Hypervisor
from cvm.image.provisioning import (
    OWNER_REFERENCE,
    RelyingParty,
    StateKeyRequest,
    owner_keys,
    owner_reference,
)
from cvm.image.reference_values import ImageReferenceValues, loads
from cvm.vtpm.state_file import MonotonicCounter, RollbackCounter

PRODUCT = "Milan"
SEV_POLICY, SEV_ES_POLICY = 0x1, 0x5  # QEMU's defaults: NODBG (+ ES)


@lru_cache(maxsize=16)
def _vcek_certificate(vendor: Vendor, chip_id: bytes, tcb: TcbVersion) -> bytes:
    """The VCEK certificate from the vendor's KDS, fetched once per chip and TCB (hosts cache
    it: it changes only with the TCB)."""
    return vendor.vcek_certificate(chip_id, tcb)


class HostRelayedBroker:
    """The SVSM's key broker: the host relays the report (adding the VCEK chain it fetched from
    the vendor's KDS) to the owner's relying party and the wrapped key back — bytes only."""

    def __init__(self, party: RelyingParty, vendor: Vendor, run: HostRun) -> None:
        self.party, self.vendor, self.run = party, vendor, run

    def challenge(self) -> bytes:
        nonce = self.party.challenge()
        self.run.log.append(b"relayed a nonce from the relying party: " + nonce.hex().encode())
        return nonce

    def release(self, report: bytes, nonce: bytes, public: tuple[bytes, bytes]) -> bytes:
        tcb = AttestationReport.from_bytes(report).reported_tcb
        vcek = _vcek_certificate(self.vendor, self.run.psp.chip_id, tcb)
        evidence = Evidence.from_cert_chain(report, vcek, self.vendor.cert_chain())
        self.run.log.append(b"relayed the SVSM's report: " + report.hex().encode())
        wrapped = self.party.release(StateKeyRequest(
            report, evidence.vcek, evidence.ask, evidence.ark, nonce, *public))
        self.run.log.append(b"relayed the wrapped state key: " + wrapped.hex().encode())
        return wrapped


def host_certificates(vendor: Vendor, run: HostRun) -> Callable[[bytes], tuple[bytes, bytes,
                                                                              bytes]]:
    """The host's answer to "which VCEK chain signs this report?": it fetches the VCEK for the
    chip and the report's TCB from the vendor's KDS, as an extended guest request returns it."""
    def chain(report: bytes) -> tuple[bytes, bytes, bytes]:
        tcb = AttestationReport.from_bytes(report).reported_tcb
        vcek = _vcek_certificate(vendor, run.psp.chip_id, tcb)
        evidence = Evidence.from_cert_chain(report, vcek, vendor.cert_chain())
        run.log.append(b"supplied the VCEK chain for the SVSM's report: " + report.hex().encode())
        return evidence.vcek, evidence.ask, evidence.ark
    return chain


def kbs_agent(url: str, vendor: Vendor, run: HostRun, resource: str = DEFAULT_RESOURCE
              ) -> KbsAgent:
    """The SVSM's agent for the broker at ``url``, its traffic relayed by the host of ``run``
    (every byte in the host's log), with the broker's rollback counter for the state key."""
    exchange = NetworkRelay(url, run.log).exchange
    return KbsAgent(url, exchange, host_certificates(vendor, run), resource,
                    KbsCounter(url, exchange, resource))


def relying_party(folder: Path, reference: ImageReferenceValues, vendor: Vendor,
                  random: Callable[[int], bytes],
                  verifier: Callable[[TrustRoots], Verifier] | None = None) -> RelyingParty:
    """The owner's relying party for the image in ``folder`` (reads ``owner/``); ``verifier``
    makes its report verifier from the trusted roots (default: the plain one)."""
    provisioning, wrapped = owner_keys(folder, "the relying party")
    roots = TrustRoots.of([vendor.trust_anchor()], "emulated")
    return RelyingParty(reference, roots, provisioning, wrapped, random,
                        verifier=verifier(roots) if verifier is not None else None)


def _reference(folder: Path, owner_appraises: bool) -> ImageReferenceValues:
    """What the boot is judged against. The owner's relying party, run here, appraises with the
    copy the owner keeps in ``owner/`` (the one beside the image is the host's, which it may
    edit). When the relying party is elsewhere (a broker, or one given), the trace's predictions
    come from the owner's copy if this folder has it, else from the host's."""
    if owner_appraises or (folder / "owner" / OWNER_REFERENCE).is_file():
        return owner_reference(folder, "the relying party")
    return loads((folder / "reference-values.json").read_bytes())


def _launch_check(run: HostRun, predicted: bytes | None, tik: bytes | None
                  ) -> tuple[bytes, bool]:
    """The launch measurement and whether the owner accepts it: SNP's digest against the
    prediction; SEV's MEASURE = HMAC(TIK, ... ‖ digest ‖ MNONCE) recomputed with the
    predicted digest and the owner's TIK (55766 §6.5), and with the policy the owner expects
    (QEMU's default for the mode): the MAC covers the policy, so a host that launched with
    another one (``boot_bundle(policy=...)``, a downgrade) is not accepted."""
    assert run.measurement is not None
    if run.request.mode is Mode.SEV_SNP or tik is None:
        return run.measurement, run.measurement == predicted
    mac, nonce = run.measurement[:32], run.measurement[32:]
    if predicted is None:
        return mac, False
    version = run.psp.version
    policy = SEV_ES_POLICY if run.request.mode is Mode.SEV_ES else SEV_POLICY
    expected = measure_mac(tik, (version.major, version.minor), version.build, policy,
                           predicted, nonce)
    return mac, hmac.compare_digest(mac, expected)


def _store_state(guest: GuestVm, run: HostRun) -> None:
    """Shutdown: the OS shuts the vTPM down orderly (TPM2_Shutdown(CLEAR), as at poweroff,
    so the next boot counts no dictionary-attack failure), then its state is sealed again,
    handed to the host, stored."""
    guest.stage = "shutdown"
    if guest.client is not None:
        guest.client.shutdown()
    if guest.svsm is not None:
        run.store_state(guest.svsm.seal_state())
        guest.trace.add("SVSM", "sealed", "the vTPM state for the host to store (counter "
                        "advanced)")
    elif run.vtpm is not None:
        run.store_state(run.seal_host_vtpm())
        guest.trace.add("host", "sealed", "its vTPM's state under the key it holds")


def boot_bundle(folder: Path, mode: Mode | str = Mode.SEV_SNP, *, host: Hypervisor | None = None,
                vcpus: int = 1, memory_bytes: int | None = None,
                random: Callable[[int], bytes] = os.urandom,
                counter: RollbackCounter | None = None,
                party: RelyingParty | None = None, store_state: bool = False,
                kbs: str | None = None, kbs_resource: str = DEFAULT_RESOURCE,
                vendor: Vendor | None = None, policy: int | None = None) -> VmTrace:
    """Launch, boot and run the image in ``folder``; the trace says how far it got.

    ``kbs`` is the URL of a key broker to obtain the vTPM state key from (``kbs_resource``,
    ``<repository>/vtpm/<tag>``), instead of the owner's in-process relying party; ``vendor``
    the emulated AMD whose chip runs the VM (default: this process's; a broker in another
    process trusts the installation's, :meth:`cvm.amd.root_store.RootStore.vendor`).

    With ``store_state`` the vTPM state is sealed again at the end (the SVSM advances the
    relying party's ``counter`` — with ``kbs``, by default the broker's; the host's vTPM its
    own) and the host stores it in the bundle's state file, as a host keeps a VM's state across
    boots. ``policy`` is the guest policy the host launches with (None: QEMU's default for the
    mode)."""
    mode = Mode.parse(mode) if isinstance(mode, str) else mode
    trace = VmTrace(mode.value, vcpus)
    reference = _reference(folder, owner_appraises=party is None and kbs is None)
    trace.predicted = {bank: dict(values) for bank, values in reference.pcrs.items()}
    if mode is not Mode.PLAIN:
        try:
            trace.predicted_measurement = reference.launch_digest(mode.value, vcpus)
        except UsageError:
            trace.predicted_measurement = None
    if kbs is not None and mode is not Mode.SEV_SNP:
        raise UsageError(f"--kbs: the SVSM attests to the broker; {mode.value} has no SVSM "
                         "(use sev-snp)")
    vendor = vendor or default_vendor(PRODUCT)  # made once per process, not per boot
    started = time.perf_counter()
    tik = random(TIK_SIZE) if mode in (Mode.SEV, Mode.SEV_ES) else None
    memory = DEFAULT_MEMORY if memory_bytes is None else memory_bytes
    request = VmRequest(mode, vcpus, memory, tik, policy)
    stage = "launch"
    try:
        run = launch(load_host_image(folder), request, vendor.manufacture_chip(0), host)
    except CvmError as refused:
        trace.refused = (stage, refused)
        return trace
    trace.host, trace.guest, trace.run = run.host, run.guest, run
    trace.add("host", "launched", f"a {mode.value} VM through the PSP ({vcpus} vCPU(s))"
              if mode is not Mode.PLAIN else "a plain VM (no launch measurement)")
    if run.measurement is not None:
        trace.launch_measurement, same = _launch_check(run, trace.predicted_measurement, tik)
        trace.launch_accepted = same
        trace.add("PSP", "measured", f"the launch ({'equals' if same else 'DIFFERS from'} "
                  f"the prediction): {trace.launch_measurement.hex()}")
    trace.timings["launch"] = time.perf_counter() - started
    guest = GuestVm(run.bsp, random, trace)
    trace.secrets, trace.vm = guest.secrets, guest
    try:
        if mode is Mode.SEV_SNP:
            assert run.secrets_gpa is not None
            source: KbsAgent | HostRelayedBroker
            if kbs is not None:  # the broker holds the rollback counter, unless one is given
                source = kbs_agent(kbs, vendor, run, kbs_resource)
                assert source.counter is not None
                counter = counter or source.counter
            else:
                source = HostRelayedBroker(
                    party or relying_party(folder, reference, vendor, random), vendor, run)
            guest.start_svsm(run.secrets_gpa, counter or MonotonicCounter(), run.image.state,
                             source)
        else:
            guest.start_host_tpm()
        guest.boot(run.disk, run.image.varstore, run.image.firmware)
        guest.open_root()
        guest.run_workload()
        if store_state:
            _store_state(guest, run)
    except CvmError as refused:
        trace.refused = (guest.stage, refused)
    finally:
        try:
            guest.finish()
        except CvmError as failed:  # e.g. a host's vTPM that answers PCR_Read malformed
            if trace.refused is None:  # the first refusal is the one that stopped the boot
                trace.refused = ("trace", failed)
        run.disk.flush()
    return trace
