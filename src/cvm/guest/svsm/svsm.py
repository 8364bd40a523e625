"""The SVSM at VMPL0: it hosts the vTPM, keeps its state in pages the guest OS cannot touch,
and answers the SVSM call protocol.

AMD "Secure VM Service Module for SEV-SNP Guests" (58019, revision 1.00):

* section 4 (calling convention): the guest OS (VMPL1+) loads RAX = ``protocol << 32 | call``
  and RCX/RDX/R8, then VMGEXIT(SNP_RUN_VMPL) switches the vCPU to VMPL0, where the SVSM
  answers in the same registers (RAX = 0 or an SVSM_ERR_* code, Table 4);
* section 7 (attestation protocol 1): SVSM_ATTEST_SERVICES (0) and SVSM_ATTEST_SINGLE_SERVICE
  (1) return an SNP report whose REPORT_DATA = SHA-512(nonce ‖ manifest), the manifest holding
  the vTPM's EK public area (as COCONUT-SVSM ``kernel/src/protocols/attest.rs`` does), so a
  verifier ties the EK — hence AKs and quotes — to the launch measurement;
* section 8 (vTPM protocol 2): SVSM_VTPM_QUERY (0) and SVSM_VTPM_COMMAND (1), the request
  page of :mod:`cvm.formats.svsm.vtpm_command`; locality 0 only.

Memory (SEV-SNP, AMD APM vol. 2 §15.36.7): the SVSM PVALIDATEs its state pages and never
grants VMPL1+ any permission on them with RMPADJUST, so a guest-OS access faults (#NPF with
the VMPL bit); the host sees them only as ciphertext. The state at rest is sealed by
:mod:`cvm.vtpm.state_file`.

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
  opened or sealed and is a transient of that one call (like a value in a CPU register); a
  broker-released key is copied at start into the SVSM's key page and read from there.
* Unsealed secrets and other response parameters: a transient of one command, written to the
  guest OS's own (private, VMPL1) request page.

Not secret, and kept in the Python engine across calls: the injected randomness source (the
CPU's RDRAND), the clock and dictionary-attack timers (the TPM's clock circuit), and the
rollback counter's handle (its value is the relying party's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cvm.errors import CvmError, FormatError, StateError, StatusError
from cvm.formats.snp.key_request import KeyRequest
from cvm.formats.svsm.attest_request import (
    ATTEST_REQUEST_SIZE,
    SINGLE_SERVICE_REQUEST_SIZE,
    AttestRequest,
)
from cvm.formats.svsm.services_manifest import VTPM_SERVICE_GUID, ServicesManifest
from cvm.formats.svsm.vtpm_command import (
    BUFFER_SIZE,
    TPM_SEND_COMMAND,
    VtpmCommandRequest,
    VtpmCommandResponse,
)
from cvm.formats.tpm2.command import Response
from cvm.formats.tpm2.constants import TpmRh
from cvm.formats.tpm2.response_code import TpmRc
from cvm.guest.kernel.guest_request import GuestRequester
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.fault import FaultRaised
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.rmp import Perm
from cvm.hardware.vcpu import Vcpu
from cvm.vtpm.engine import Tpm
from cvm.vtpm.pcr import PcrBanks
from cvm.vtpm.state import PersistentState
from cvm.vtpm.state_file import (
    DerivedKeyProvider,
    GuestPageKeyProvider,
    RollbackCounter,
    StateKeyProvider,
    open_state,
)
from cvm.vtpm.state_file import seal_state as seal_state_file
from cvm.vtpm.templates import ek_template
from cvm.vtpm.volatile import VolatileState

PROTOCOL_CORE, PROTOCOL_ATTEST, PROTOCOL_VTPM = 0, 1, 2
VTPM_QUERY, VTPM_COMMAND = 0, 1
ATTEST_SERVICES, ATTEST_SINGLE_SERVICE = 0, 1
SVSM_SUCCESS = 0
SVSM_ERR_UNSUPPORTED_PROTOCOL = 0x8000_0001
SVSM_ERR_UNSUPPORTED_CALL = 0x8000_0002
SVSM_ERR_INVALID_ADDRESS = 0x8000_0003
SVSM_ERR_INVALID_FORMAT = 0x8000_0004
SVSM_ERR_INVALID_PARAMETER = 0x8000_0005
MAX_NONCE = 0x1000
T = TypeVar("T")
STATE_LENGTH_SIZE = 4
STATE_KEY_SIZE = 32
VMPCK_INDEX = 0


@dataclass(frozen=True)
class SvsmLayout:
    """Guest-physical pages the SVSM uses: its PSP channel, its state pages and its key page."""

    ghcb_gpa: int = 0x1000
    request_gpa: int = 0x2000
    response_gpa: int = 0x3000
    state_gpa: int = 0x10000
    state_pages: int = 8
    key_gpa: int = 0x18000


def at_vmpl0(vcpu: Vcpu, action: Callable[[], T]) -> T:
    """Run ``action`` with ``vcpu`` at VMPL0 (the SVSM's code), then restore its VMPL."""
    saved = vcpu.vmpl
    vcpu.vmpl = 0
    try:
        return action()
    finally:
        vcpu.vmpl = saved


def _blank_volatile() -> VolatileState:
    return VolatileState(False, b"", b"", PcrBanks(), {}, {})


class Svsm:
    """The SVSM running on ``vcpu`` at VMPL0 with the vTPM."""

    def __init__(self, vcpu: Vcpu, requester: GuestRequester, layout: SvsmLayout, tpm: Tpm,
                 keys: StateKeyProvider, counter: RollbackCounter,
                 random: Callable[[int], bytes]) -> None:
        self.vcpu, self.requester, self.layout, self.tpm = vcpu, requester, layout, tpm
        self.keys, self.counter, self.random = keys, counter, random
        self._ek_public: bytes | None = None

    @classmethod
    def start(cls, vcpu: Vcpu, secrets_gpa: int, counter: RollbackCounter,
              random: Callable[[int], bytes], stored: bytes | None = None,
              layout: SvsmLayout = SvsmLayout(), keys: StateKeyProvider | None = None) -> Svsm:
        """Boot: take the state pages, obtain the state key, open (or manufacture) the state.

        ``keys`` is a broker-released key; without it the key is derived by the PSP. A
        tampered, truncated, rolled-back or foreign ``stored`` state refuses to start."""
        vcpu.vmpl = 0
        requester = GuestRequester.start(
            vcpu, secrets_gpa, VMPCK_INDEX, ghcb_gpa=layout.ghcb_gpa,
            request_gpa=layout.request_gpa, response_gpa=layout.response_gpa,
        )
        guest = SevGuest(vcpu)
        for page in range(layout.state_pages):
            guest.accept(layout.state_gpa + page * PAGE_SIZE)
        guest.accept(layout.key_gpa)
        provider = cls._key_provider(vcpu, requester, layout, keys)
        if stored is None:
            state = PersistentState.manufacture(random)
        else:
            state = PersistentState.from_bytes(open_state(stored, provider, counter))
        svsm = cls(vcpu, requester, layout, Tpm(state, random=random), provider, counter, random)
        svsm.write_state()
        svsm.unload()
        return svsm

    @staticmethod
    def _key_provider(vcpu: Vcpu, requester: GuestRequester, layout: SvsmLayout,
                      keys: StateKeyProvider | None) -> StateKeyProvider:
        """The state key's provider; a released key moves into the key page first."""
        if keys is None:
            def derive(request: KeyRequest) -> bytes:
                response = at_vmpl0(vcpu, lambda: requester.derived_key(request))
                if response.status:
                    raise StatusError(f"MSG_KEY_REQ failed with status {response.status:#x}",
                                      response.status)
                return response.derived_key
            return DerivedKeyProvider(derive)
        at_vmpl0(vcpu, lambda: vcpu.write(layout.key_gpa, keys.state_key()))
        return GuestPageKeyProvider(
            lambda: at_vmpl0(vcpu, lambda: vcpu.read(layout.key_gpa, STATE_KEY_SIZE)),
            keys.source,
        )

    # ---- memory ------------------------------------------------------------------------
    def write_state(self) -> None:
        """Write the vTPM's state — non-volatile and volatile — into the VMPL0 state pages."""
        parts = (self.tpm.state.to_bytes(), self.tpm.volatile().to_bytes())
        blob = b"".join(len(p).to_bytes(STATE_LENGTH_SIZE, "little") + p for p in parts)
        room = self.layout.state_pages * PAGE_SIZE
        if len(blob) > room:
            raise StateError(f"vTPM state of {len(blob)} bytes exceeds the {room}-byte pages")
        self._as_vmpl0(lambda: self.vcpu.write(self.layout.state_gpa, blob))
        self.tpm.changed = False

    def _read_parts(self) -> tuple[bytes, bytes]:
        def read() -> tuple[bytes, bytes]:
            parts = []
            offset = self.layout.state_gpa
            for _ in range(2):
                size = int.from_bytes(self.vcpu.read(offset, STATE_LENGTH_SIZE), "little")
                if size > self.layout.state_pages * PAGE_SIZE:
                    raise FormatError("vTPM state pages are corrupt")
                parts.append(self.vcpu.read(offset + STATE_LENGTH_SIZE, size))
                offset += STATE_LENGTH_SIZE + size
            return parts[0], parts[1]
        return self._as_vmpl0(read)

    def read_state(self) -> bytes:
        """The non-volatile state as the SVSM's pages hold it (VMPL0 read)."""
        return self._read_parts()[0]

    def load_state(self) -> None:
        """Make the pages the vTPM's truth: reload both states from them into the engine."""
        persistent, volatile = self._read_parts()
        self.tpm.state = PersistentState.from_bytes(persistent)
        self.tpm.restore_volatile(VolatileState.from_bytes(volatile))

    def unload(self) -> None:
        """Drop the engine's copies of the state: between calls only the pages hold it."""
        self.tpm.state = PersistentState({}, {})
        self.tpm.restore_volatile(_blank_volatile())

    def _loaded(self, action: Callable[[Tpm], T], write: bool = True) -> T:
        """Load the state, run ``action`` on the engine, write the state back, unload."""
        try:
            self.load_state()
            result = action(self.tpm)
            if write:
                self.write_state()
            return result
        finally:
            self.unload()

    def grant(self, gpa: int, pages: int, vmpl: int = 1) -> None:
        """Validate guest-OS pages and give ``vmpl`` full access (RMPADJUST)."""
        def run() -> None:
            guest = SevGuest(self.vcpu)
            for page in range(pages):
                address = gpa + page * PAGE_SIZE
                guest.accept(address)
                guest.rmpadjust(address, vmpl, Perm.all())
        self._as_vmpl0(run)

    def _as_vmpl0(self, action: Callable[[], T]) -> T:
        return at_vmpl0(self.vcpu, action)

    # ---- persistence -------------------------------------------------------------------
    def seal_state(self) -> bytes:
        """The state file for the host to store (encrypted, counter advanced)."""
        def run() -> bytes:
            self._loaded(lambda tpm: tpm.save_clock())
            return seal_state_file(self.read_state(), self.keys, self.counter, self.random)
        return self._as_vmpl0(run)

    # ---- the call protocol -------------------------------------------------------------
    def handle_call(self) -> None:
        """VMGEXIT(SNP_RUN_VMPL) from the guest OS: answer the call in RAX/RCX/RDX/R8."""
        self._as_vmpl0(self._dispatch)

    def _dispatch(self) -> None:
        rax = self.vcpu.register("rax")
        protocol, call = rax >> 32, rax & 0xFFFF_FFFF
        rcx = self.vcpu.register("rcx")
        outputs: dict[str, int] = {}
        if protocol == PROTOCOL_VTPM and call == VTPM_QUERY:
            result = SVSM_SUCCESS
            outputs = {"rcx": 1 << TPM_SEND_COMMAND, "rdx": 0}
        elif protocol == PROTOCOL_VTPM and call == VTPM_COMMAND:
            result = self._vtpm_command(rcx)
        elif protocol == PROTOCOL_ATTEST and call in (ATTEST_SERVICES, ATTEST_SINGLE_SERVICE):
            result, outputs = self._attest(rcx, call == ATTEST_SINGLE_SERVICE)
        elif protocol in (PROTOCOL_CORE, PROTOCOL_ATTEST, PROTOCOL_VTPM):
            result = SVSM_ERR_UNSUPPORTED_CALL
        else:
            result = SVSM_ERR_UNSUPPORTED_PROTOCOL
        self.vcpu.set_register("rax", result)
        for name, value in outputs.items():
            self.vcpu.set_register(name, value)

    def _guest_read(self, gpa: int, size: int) -> bytes | None:
        try:
            return self.vcpu.read(gpa, size)
        except (CvmError, FaultRaised):
            return None

    def _vtpm_command(self, gpa: int) -> int:
        if gpa % PAGE_SIZE:
            return SVSM_ERR_INVALID_ADDRESS
        page = self._guest_read(gpa, BUFFER_SIZE)
        if page is None:
            return SVSM_ERR_INVALID_ADDRESS
        try:
            request = VtpmCommandRequest.from_bytes(page)
        except FormatError:
            return SVSM_ERR_INVALID_FORMAT
        if request.platform_command != TPM_SEND_COMMAND or request.locality != 0:
            return SVSM_ERR_INVALID_PARAMETER
        try:
            response = self._loaded(lambda tpm: tpm.execute(request.command, request.locality))
        except FormatError:
            response = Response(TpmRc.FAILURE).to_bytes(False)
        self.vcpu.write(gpa, VtpmCommandResponse(response).to_bytes())
        return SVSM_SUCCESS

    def ek_public(self) -> bytes:
        """The vTPM's EK (TCG default RSA template) TPMT_PUBLIC: the vTPM service manifest.

        Derived from the endorsement seed once (an RSA-2048 key generation) and kept: it is
        public, and the seed does not change while the SVSM runs."""
        def public(tpm: Tpm) -> bytes:
            return tpm.primary_public(TpmRh.ENDORSEMENT, ek_template("rsa")).to_bytes()
        if self._ek_public is None:
            self._ek_public = self._as_vmpl0(lambda: self._loaded(public, write=False))
        return self._ek_public

    def report(self, report_data: bytes) -> bytes:
        """MSG_REPORT_REQ at VMPL0 over VMPCK0: the raw report carrying ``report_data``."""
        response = self._as_vmpl0(lambda: self.requester.report(report_data, 0))
        if response.status:
            raise StatusError(f"MSG_REPORT_REQ failed with status {response.status:#x}",
                              response.status)
        return response.report

    def _attest(self, gpa: int, single: bool) -> tuple[int, dict[str, int]]:
        size = SINGLE_SERVICE_REQUEST_SIZE if single else ATTEST_REQUEST_SIZE
        raw = self._guest_read(gpa, size)
        if raw is None:
            return SVSM_ERR_INVALID_ADDRESS, {}
        try:
            request = AttestRequest.from_bytes(raw, single)
        except FormatError:
            return SVSM_ERR_INVALID_FORMAT, {}
        if single and request.service != VTPM_SERVICE_GUID:
            return SVSM_ERR_INVALID_PARAMETER, {}
        if request.nonce_size > MAX_NONCE:
            return SVSM_ERR_INVALID_PARAMETER, {}
        nonce = self._guest_read(request.nonce_gpa, request.nonce_size)
        if nonce is None:
            return SVSM_ERR_INVALID_ADDRESS, {}
        manifest = self.ek_public()
        if not single:
            manifest = ServicesManifest(((VTPM_SERVICE_GUID, manifest),)).to_bytes()
        report = self.report(hashlib.sha512(nonce + manifest).digest())
        needed = {"rcx": len(report), "rdx": len(manifest), "r8": 0}
        if request.report_size < len(report) or request.manifest_size < len(manifest):
            return SVSM_ERR_INVALID_PARAMETER, needed
        try:
            self.vcpu.write(request.report_gpa, report)
            self.vcpu.write(request.manifest_gpa, manifest)
        except (CvmError, FaultRaised):
            return SVSM_ERR_INVALID_ADDRESS, {}
        return SVSM_SUCCESS, needed
