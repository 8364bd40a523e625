"""The SVSM at VMPL0: it hosts the vTPM, keeps its state in pages the guest OS cannot touch,
and answers the SVSM call protocol.

AMD "Secure VM Service Module for SEV-SNP Guests" (58019, revision 1.00):

* section 4 (calling convention): the guest OS (VMPL1) loads RAX = ``protocol << 32 | call``
  and RCX/RDX/R8, sets ``call_pending`` in its calling area (the SVSM_CAA page), and asks the
  host to run VMPL0 (VMGEXIT, "run VMPL"). The vCPU enters the SVSM's VMSA; the SVSM reads
  the call from the guest OS's VMSA, answers in the same registers (RAX = 0 or a code of
  :class:`~cvm.guest.svsm.result.SvsmResult`) and asks the host to run VMPL1 again. The
  switches are the hardware's (:mod:`cvm.hardware.vcpu`); the host sees neither the call nor
  the answer, which stay in the encrypted VMSAs.
* one module per protocol: :mod:`.core` (0), :mod:`.attestation` (1), :mod:`.vtpm` (2).

At start (on the launch VMSA, VMPL0) the SVSM opens the vTPM state, creates the guest OS's
VMSA at VMPL1 in one of its pages (RMPADJUST with the VMSA bit, GHCB AP creation) and runs it.
Work the platform asks of the SVSM outside a call (sealing the state at shutdown, granting the
guest OS its boot pages) runs the same way: the vCPU switches to VMPL0, the SVSM's entry code
does it and switches back (:meth:`Svsm.at_vmpl0`).

Memory (SEV-SNP, AMD APM vol. 2 §15.36.7): the SVSM PVALIDATEs its state pages and never
grants VMPL1+ any permission on them with RMPADJUST, so a guest-OS access faults (#NPF with
the VMPL bit); the host sees them only as ciphertext. The SVSM itself runs at VMPL0 and may
touch every page, so an address the guest OS passes in a call is refused
(SVSM_ERR_INVALID_ADDRESS) where it reaches into a page of the SVSM's own: the guest OS cannot
have it read its key page into a report or write a report over its state. The state at rest is
sealed by :mod:`cvm.vtpm.state_file`.

Where each secret lives (the architecture's rule: a guest component's secrets are in guest
memory, written and read through the vCPU, so the host's view of DRAM is a real host's):

* TPM seeds and proofs, hierarchy and NV authValues, persistent objects
  (:mod:`cvm.vtpm.state`), and the null seed and proof, PCRs, loaded objects' sensitive areas
  and session keys (:mod:`cvm.vtpm.volatile`): in the SVSM's state pages. A call loads them
  into the engine, runs one command and writes them back, then :meth:`Svsm.unload` drops the
  engine's copies, so between calls the pages are the only place they exist.
* VMPCK0 and the message sequence numbers: in the secrets page (SEV-SNP ABI 56860 Table 71),
  read through the vCPU at VMPL0 for every message by
  :class:`cvm.guest.kernel.guest_request.GuestRequester`; the host's request/response pages and
  its relay see only AES-GCM ciphertext. A refused or forged exchange wipes VMPCK0, so the
  SVSM can neither reuse an IV nor ask the PSP again (no report, no derived key) until reboot.
* The state-at-rest key: a PSP-derived key is asked for with MSG_KEY_REQ whenever the state is
  opened or sealed and is a transient of that one call (like a value in a CPU register); a key
  the relying party released after attestation (:mod:`.key_release`, unwrapped with an
  ephemeral scalar kept in the key page and wiped after) is written into the SVSM's key page
  and read from there.
* Unsealed secrets and other response parameters: a transient of one command, written to the
  guest OS's own (private, VMPL1) request page.

Not secret, and kept in the Python engine across calls: the injected randomness source (the
CPU's RDRAND), the clock and dictionary-attack timers (the TPM's clock circuit), and the
rollback counter's handle (its value is the relying party's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cvm.errors import CvmError, FormatError, PolicyError, StateError, StatusError
from cvm.formats.snp.key_request import KeyRequest
from cvm.formats.snp.vmsa import SevFeatures, Vmsa
from cvm.formats.tpm2.constants import TpmRh
from cvm.guest.kernel.guest_request import GuestRequester
from cvm.guest.kernel.sev_guest import SevGuest, vmsa_registers
from cvm.guest.svsm.attestation import PROTOCOL_ATTEST, AttestationProtocol
from cvm.guest.svsm.core import PROTOCOL_CORE, CoreProtocol
from cvm.guest.svsm.key_release import KeyReleaseAgent, StateKeyBroker, obtain_state_key
from cvm.guest.svsm.result import CallReply, SvsmResult, refuse
from cvm.guest.svsm.vtpm import PROTOCOL_VTPM, VtpmProtocol
from cvm.hardware.fault import FaultRaised
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.rmp import Perm, RmpStatus
from cvm.hardware.vcpu import Vcpu, reset_registers
from cvm.vtpm.engine import Tpm
from cvm.vtpm.pcr import PcrBanks
from cvm.vtpm.state import PersistentState
from cvm.vtpm.state_file import (
    DerivedKeyProvider,
    GuestPageKeyProvider,
    KeySource,
    RollbackCounter,
    StateKeyProvider,
    open_state,
)
from cvm.vtpm.state_file import seal_state as seal_state_file
from cvm.vtpm.templates import ek_template
from cvm.vtpm.volatile import VolatileState

T = TypeVar("T")
STATE_LENGTH_SIZE = 4
STATE_KEY_SIZE = 32
VMPCK_INDEX = 0
GUEST_VMPL = 1
RMP_SIZEMISMATCH = int(RmpStatus.FAIL_SIZEMISMATCH)
# The guest OS's VMSA: SNP, and Restricted Injection — the host may not inject events into it.
GUEST_SEV_FEATURES = SevFeatures.SNP_ACTIVE | SevFeatures.RESTRICTED_INJECTION
CALL_PENDING_OFFSET = 0  # 58019 Table 3: the calling area's call_pending byte
PROTOCOL_VERSIONS = {PROTOCOL_CORE: (1, 1), PROTOCOL_ATTEST: (1, 1), PROTOCOL_VTPM: (1, 1)}


@dataclass(frozen=True)
class SvsmLayout:
    """Guest-physical pages the SVSM uses: its PSP channel, its state pages, its key page, the
    guest OS's VMSA and the calling area it shares with the guest OS."""

    ghcb_gpa: int = 0x1000
    request_gpa: int = 0x2000
    response_gpa: int = 0x3000
    state_gpa: int = 0x10000
    state_pages: int = 8
    key_gpa: int = 0x18000
    guest_vmsa_gpa: int = 0x19000
    caa_gpa: int = 0x1A000


def own_pages(layout: SvsmLayout, secrets_gpa: int) -> frozenset[int]:
    """The pages an SVSM with ``layout`` keeps for itself, and the secrets page at
    ``secrets_gpa``: what no address the guest OS passes may reach into. Each as the address
    of its page: a layout address inside a page (the key at 0x18010) keeps the whole page."""
    m = layout
    addresses = (m.ghcb_gpa, m.request_gpa, m.response_gpa, m.key_gpa, m.guest_vmsa_gpa,
                 m.caa_gpa, secrets_gpa,
                 *(m.state_gpa + i * PAGE_SIZE for i in range(m.state_pages)))
    return frozenset(address - address % PAGE_SIZE for address in addresses)


def _blank_volatile() -> VolatileState:
    return VolatileState(False, b"", b"", PcrBanks(), {}, {})


class Svsm:
    """The SVSM running on ``vcpu`` at VMPL0 with the vTPM."""

    def __init__(self, vcpu: Vcpu, requester: GuestRequester, layout: SvsmLayout, tpm: Tpm,
                 keys: StateKeyProvider, counter: RollbackCounter,
                 random: Callable[[int], bytes]) -> None:
        self.vcpu, self.requester, self.layout, self.tpm = vcpu, requester, layout, tpm
        self.keys, self.counter, self.random = keys, counter, random
        self._ek_cache: bytes | None = None
        self._own: tuple[SvsmLayout, int, frozenset[int]] | None = None
        self.kernel = SevGuest(vcpu)
        self.calls = 0
        self._work: Callable[[], None] | None = None
        self.protocols = {
            PROTOCOL_CORE: CoreProtocol(PROTOCOL_VERSIONS, self._guest_read, self._guest_write,
                                        self._pvalidate, self._own_page).handle,
            PROTOCOL_ATTEST: AttestationProtocol(self._guest_read, self._guest_write,
                                                 self._ek_public, self._report).handle,
            PROTOCOL_VTPM: VtpmProtocol(self._guest_read, self._guest_write,
                                        self._execute).handle,
        }

    @classmethod
    def start(cls, vcpu: Vcpu, secrets_gpa: int, counter: RollbackCounter,
              random: Callable[[int], bytes], stored: bytes | None = None,
              layout: SvsmLayout = SvsmLayout(), keys: StateKeyProvider | None = None,
              broker: StateKeyBroker | KeyReleaseAgent | None = None) -> Svsm:
        """Boot on the launch VMSA (VMPL0): take the state pages, obtain the state key, open
        (or manufacture) the state, create and run the guest OS's VMSA at VMPL1.

        The state key comes from ``broker`` after attestation (:mod:`.key_release`; a
        :class:`KeyReleaseAgent` such as the key broker's agent, :mod:`.kbs_agent`), or is
        ``keys`` (a key released beforehand), or else is derived by the PSP. A tampered,
        truncated, rolled-back or foreign ``stored`` state refuses to start."""
        if vcpu.vmpl != 0:
            raise StateError(f"the SVSM starts at VMPL0, the vCPU runs at VMPL{vcpu.vmpl}")
        requester = GuestRequester.start(
            vcpu, secrets_gpa, VMPCK_INDEX, ghcb_gpa=layout.ghcb_gpa,
            request_gpa=layout.request_gpa, response_gpa=layout.response_gpa,
        )
        guest = SevGuest(vcpu)
        for page in range(layout.state_pages):
            guest.accept(layout.state_gpa + page * PAGE_SIZE)
        guest.accept(layout.key_gpa)
        if broker is not None:
            if isinstance(broker, KeyReleaseAgent):  # a key broker's agent runs its protocol
                broker.obtain_state_key(vcpu, requester, layout.key_gpa, random)
            else:
                obtain_state_key(vcpu, requester, layout.key_gpa, broker, random)
            provider: StateKeyProvider = GuestPageKeyProvider(
                lambda: vcpu.read(layout.key_gpa, STATE_KEY_SIZE), KeySource.BROKER_RELEASED)
        else:
            provider = cls._key_provider(vcpu, requester, layout, keys)
        if stored is None:
            state = PersistentState.manufacture(random)
        else:
            state = PersistentState.from_bytes(open_state(stored, provider, counter))
        svsm = cls(vcpu, requester, layout, Tpm(state, random=random), provider, counter, random)
        svsm.kernel.ghcb_gpa = layout.ghcb_gpa
        svsm.write_state()
        svsm.unload()
        svsm._run_guest_os()
        return svsm

    @staticmethod
    def _key_provider(vcpu: Vcpu, requester: GuestRequester, layout: SvsmLayout,
                      keys: StateKeyProvider | None) -> StateKeyProvider:
        """The state key's provider; a released key moves into the key page first."""
        if keys is None:
            def derive(request: KeyRequest) -> bytes:
                response = requester.derived_key(request)
                if response.status:
                    raise StatusError(f"MSG_KEY_REQ failed with status {response.status:#x}",
                                      response.status)
                return response.derived_key
            return DerivedKeyProvider(derive)
        vcpu.write(layout.key_gpa, keys.state_key())
        return GuestPageKeyProvider(lambda: vcpu.read(layout.key_gpa, STATE_KEY_SIZE),
                                    keys.source)

    def _run_guest_os(self) -> None:
        """Create the guest OS's VMSA at VMPL1, share the calling area with it, and run it."""
        registers = reset_registers()
        registers.update(vmpl=GUEST_VMPL, sev_features=int(GUEST_SEV_FEATURES))
        self.kernel.create_vmsa(self.layout.guest_vmsa_gpa, Vmsa(registers))
        self.kernel.accept(self.layout.caa_gpa)
        self.vcpu.write(self.layout.caa_gpa, bytes(PAGE_SIZE))
        self.kernel.rmpadjust(self.layout.caa_gpa, GUEST_VMPL, Perm.READ | Perm.WRITE)
        self.vcpu.entry_code[0] = self._entered
        self.kernel.leave_to(GUEST_VMPL)

    # ---- VMPL0 entry ---------------------------------------------------------------------
    def _entered(self) -> None:
        """The SVSM's entry code: serve the pending call (or the platform's work), then run
        the guest OS again. Any exception here is the SVSM's own fault and stops the VM."""
        try:
            work, self._work = self._work, None
            if work is not None:
                work()
            else:
                self._serve_call()
        finally:
            self.kernel.leave_to(GUEST_VMPL)

    def at_vmpl0(self, action: Callable[[], T]) -> T:
        """Run ``action`` as SVSM code: directly at VMPL0, else the guest OS switches to VMPL0
        (the hardware's "run VMPL"), the SVSM runs it, and switches back."""
        if self.vcpu.vmpl == 0:
            return action()
        results: list[T] = []
        self._work = lambda: results.append(action())
        SevGuest(self.vcpu).run_vmpl(0)
        if not results:
            raise StateError("the SVSM did not run the requested work")
        return results[0]

    def _serve_call(self) -> None:
        # the calling area read once and written back whole with call_pending cleared (what a
        # one-byte write does inside the memory engine, without decrypting the page twice)
        area = bytearray(self.vcpu.read(self.layout.caa_gpa, PAGE_SIZE))
        if area[CALL_PENDING_OFFSET] != 1:
            return  # no call pending: a spurious switch, nothing to answer
        area[CALL_PENDING_OFFSET] = 0
        self.vcpu.write(self.layout.caa_gpa, bytes(area))
        page = self.vcpu.read(self.layout.guest_vmsa_gpa, PAGE_SIZE)
        arguments = vmsa_registers(page, ("rax", "rcx"))
        protocol, call = arguments["rax"] >> 32, arguments["rax"] & 0xFFFF_FFFF
        handler = self.protocols.get(protocol)
        reply: CallReply = (refuse(SvsmResult.ERR_UNSUPPORTED_PROTOCOL) if handler is None
                            else handler(call, arguments["rcx"]))
        self.calls += 1
        self.kernel.edit_vmsa(self.layout.guest_vmsa_gpa, GUEST_VMPL,
                              {"rax": int(reply.result), **reply.outputs}, page)

    # ---- memory ------------------------------------------------------------------------
    def write_state(self) -> None:
        """Write the vTPM's state — non-volatile and volatile — into the VMPL0 state pages,
        as whole pages (zero-padded), so the memory engine encrypts them without reading back."""
        self._write_parts(self.tpm.state.to_bytes(), self.tpm.volatile().to_bytes())

    def _write_parts(self, persistent: bytes, volatile: bytes) -> None:
        blob = b"".join((len(persistent).to_bytes(STATE_LENGTH_SIZE, "little"), persistent,
                         len(volatile).to_bytes(STATE_LENGTH_SIZE, "little"), volatile))
        room = self.layout.state_pages * PAGE_SIZE
        if len(blob) > room:
            raise StateError(f"vTPM state of {len(blob)} bytes exceeds the {room}-byte pages")
        blob += bytes(-len(blob) % PAGE_SIZE)
        self.at_vmpl0(lambda: self.vcpu.write(self.layout.state_gpa, blob))
        self.tpm.changed = False

    def _write_back(self, persistent: bytes, volatile: bytes) -> None:
        """After a command: write the state back into the pages that held ``persistent`` and
        ``volatile`` before it. The non-volatile part is serialised again only when the engine
        says it changed (:attr:`Tpm.changed`: every command that alters it sets it); when
        neither part changed the pages already hold the state and are left as they are."""
        new_volatile = self.tpm.volatile().to_bytes()
        if self.tpm.changed:
            self._write_parts(self.tpm.state.to_bytes(), new_volatile)
        elif new_volatile != volatile:
            self._write_parts(persistent, new_volatile)

    def _read_parts(self) -> tuple[bytes, bytes]:
        """Both parts as the pages hold them: the first page, then only the pages the two
        lengths say the parts reach into (a length beyond the state pages is corruption)."""
        room = self.layout.state_pages * PAGE_SIZE

        def read() -> tuple[bytes, bytes]:
            page = self.vcpu.read(self.layout.state_gpa, PAGE_SIZE)
            first = STATE_LENGTH_SIZE + int.from_bytes(page[:STATE_LENGTH_SIZE], "little")
            second = first + STATE_LENGTH_SIZE
            if second <= PAGE_SIZE:  # both parts in the first page: the usual case
                end = second + int.from_bytes(page[first:second], "little")
                if end <= PAGE_SIZE:
                    return page[STATE_LENGTH_SIZE:first], page[second:end]
            held = bytearray(page)

            def through(end: int) -> None:
                if end > room:
                    raise StateError("vTPM state pages are corrupt")
                if end > len(held):
                    more = -(-end // PAGE_SIZE) * PAGE_SIZE - len(held)
                    held.extend(self.vcpu.read(self.layout.state_gpa + len(held), more))

            parts = []
            offset = 0
            for _ in range(2):
                through(offset + STATE_LENGTH_SIZE)
                size = int.from_bytes(held[offset : offset + STATE_LENGTH_SIZE], "little")
                offset += STATE_LENGTH_SIZE
                through(offset + size)
                parts.append(bytes(held[offset : offset + size]))
                offset += size
            return parts[0], parts[1]
        return self.at_vmpl0(read)

    def read_state(self) -> bytes:
        """The non-volatile state as the SVSM's pages hold it (VMPL0 read)."""
        return self._read_parts()[0]

    def load_state(self) -> None:
        """Make the pages the vTPM's truth: reload both states from them into the engine."""
        self._install(*self._read_parts())

    def _install(self, persistent: bytes, volatile: bytes) -> None:
        try:
            self.tpm.state = PersistentState.from_bytes(persistent)
            self.tpm.restore_volatile(VolatileState.from_bytes(volatile))
        except FormatError as error:
            raise StateError(f"vTPM state pages are corrupt: {error}") from None
        self.tpm.changed = False

    def unload(self) -> None:
        """Drop the engine's copies of the state: between calls only the pages hold it."""
        self.tpm.state = PersistentState({}, {})
        self.tpm.restore_volatile(_blank_volatile())

    def _loaded(self, action: Callable[[Tpm], T], write: bool = True) -> T:
        """Load the state, run ``action`` on the engine, write back what changed, unload.
        The bytes read stay only for this call (to tell what changed), then go with it."""
        try:
            persistent, volatile = self._read_parts()
            self._install(persistent, volatile)
            result = action(self.tpm)
            if write:
                self._write_back(persistent, volatile)
            return result
        finally:
            self.unload()

    def grant(self, gpa: int, pages: int, vmpl: int = GUEST_VMPL) -> None:
        """Validate guest-OS pages and give ``vmpl`` full access (RMPADJUST)."""
        def run() -> None:
            for page in range(pages):
                address = gpa + page * PAGE_SIZE
                self.kernel.accept(address)
                self.kernel.rmpadjust(address, vmpl, Perm.all())
        self.at_vmpl0(run)

    # ---- persistence -------------------------------------------------------------------
    def seal_state(self) -> bytes:
        """The state file for the host to store (encrypted, counter advanced)."""
        def run() -> bytes:
            self._loaded(lambda tpm: tpm.save_clock())
            return seal_state_file(self.read_state(), self.keys, self.counter, self.random)
        return self.at_vmpl0(run)

    # ---- services for the protocols ----------------------------------------------------
    def _own_pages(self) -> frozenset[int]:
        """The pages the SVSM keeps for itself (its PSP channel, state, key, the guest OS's
        VMSA, the calling area) and the secrets page: worked out from the layout and the
        secrets page's address, again whenever either is not the one it was worked out from
        (every call that passes an address asks)."""
        layout, secrets = self.layout, self.requester.secrets_gpa
        known = self._own
        if known is None or known[0] is not layout or known[1] != secrets:
            known = self._own = (layout, secrets, own_pages(layout, secrets))
        return known[2]

    def _own_page(self, gpa: int) -> bool:
        """A page the SVSM keeps for itself, or the secrets page (:meth:`_own_pages`)."""
        return gpa - gpa % PAGE_SIZE in self._own_pages()

    def _pvalidate(self, gpa: int, validate: bool, ignore_cf: bool) -> SvsmResult:
        """PVALIDATE one guest-OS page for it; a validated page is granted to VMPL1."""
        try:
            self.kernel.pvalidate(gpa, validate=validate)
        except PolicyError:  # "already validated": PVALIDATE changed nothing
            if not ignore_cf:
                return SvsmResult.ERR_PVALIDATE_FAIL_UNCHANGED
        except StatusError as failed:  # the RMP's status: a 2 MiB entry, or not the guest's
            return (SvsmResult.ERR_PVALIDATE_FAIL_SIZEMISMATCH if failed.code == RMP_SIZEMISMATCH
                    else SvsmResult.ERR_PVALIDATE_FAIL_INPUT)
        except StateError:  # the page is not mapped
            return SvsmResult.ERR_PVALIDATE_FAIL_INPUT
        if validate:
            self.kernel.rmpadjust(gpa, GUEST_VMPL, Perm.all())
        return SvsmResult.SUCCESS

    def _guest_memory(self, gpa: int, size: int) -> bool:
        """``size`` bytes at ``gpa`` touch no page the SVSM keeps for itself. The SVSM reads
        and writes at VMPL0, which may touch every page: an address the guest OS passes must
        not make it read its own pages for the guest OS (the state key as a nonce) or write
        into them (a report over the vTPM state)."""
        return self._own_pages().isdisjoint(range(gpa - gpa % PAGE_SIZE, gpa + size, PAGE_SIZE))

    def _guest_read(self, gpa: int, size: int) -> bytes | None:
        """Bytes of the guest OS's memory; None where they are not the guest OS's to give."""
        if not self._guest_memory(gpa, size):
            return None
        try:
            return self.vcpu.read(gpa, size)
        except (CvmError, FaultRaised):
            return None

    def _guest_write(self, gpa: int, data: bytes) -> bool:
        """Write into the guest OS's memory; False where it is not the guest OS's."""
        if not self._guest_memory(gpa, len(data)):
            return False
        try:
            self.vcpu.write(gpa, data)
        except (CvmError, FaultRaised):
            return False
        return True

    def _execute(self, command: bytes, locality: int) -> bytes:
        return self._loaded(lambda tpm: tpm.execute(command, locality))

    def _ek_public(self) -> bytes:
        """The vTPM's EK (TCG default RSA template) TPMT_PUBLIC: the vTPM service manifest.

        Derived from the endorsement seed once (an RSA-2048 key generation) and kept: it is
        public, and the seed does not change while the SVSM runs."""
        def public(tpm: Tpm) -> bytes:
            return tpm.primary_public(TpmRh.ENDORSEMENT, ek_template("rsa")).to_bytes()
        if self._ek_cache is None:
            self._ek_cache = self._loaded(public, write=False)
        return self._ek_cache

    def _report(self, report_data: bytes) -> bytes:
        response = self.requester.report(report_data, 0)
        if response.status:
            raise StatusError(f"MSG_REPORT_REQ failed with status {response.status:#x}",
                              response.status)
        return response.report

    def ek_public(self) -> bytes:
        """The vTPM's EK (TCG default RSA template) TPMT_PUBLIC: the vTPM service manifest."""
        return self.at_vmpl0(self._ek_public)

    def report(self, report_data: bytes) -> bytes:
        """MSG_REPORT_REQ at VMPL0 over VMPCK0: the raw report carrying ``report_data``."""
        return self.at_vmpl0(lambda: self._report(report_data))
