"""The pre-SNP launch commands of the PSP: SEV and SEV-ES guests (SEV Key Management API).

AMD "Secure Encrypted Virtualization API" (55766), §6.2 LAUNCH_START, §6.3
LAUNCH_UPDATE_DATA, §6.4 LAUNCH_UPDATE_VMSA, §6.5 LAUNCH_MEASURE, §6.7 LAUNCH_FINISH:

* the launch digest GCTX.LD is SHA-256 over every region given to LAUNCH_UPDATE_DATA and (for
  SEV-ES) every VMSA given to LAUNCH_UPDATE_VMSA, in command order; each region is encrypted in
  place with the guest's key;
* LAUNCH_MEASURE returns ``MEASURE || MNONCE`` with
  ``MEASURE = HMAC-SHA-256(TIK, 0x04 || API_MAJOR || API_MINOR || BUILD || POLICY (u32 LE) ||
  GCTX.LD || MNONCE)``, which only the guest owner (who chose the TIK) can check.

The guest owner's session (TEK/TIK wrapped under a key agreed with the platform's PDH) is not
emulated: the TIK reaches LAUNCH_START as the session's result.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from cvm.errors import UsageError
from cvm.formats.snp.page_info import PAGE_SIZE
from cvm.hardware.psp.status import SevStatus, refuse

if TYPE_CHECKING:
    from cvm.hardware.psp.firmware import SecureProcessor

TIK_SIZE = 16
MNONCE_SIZE = 16
MEASURE_CONTEXT = 0x04
POLICY_ES = 1 << 2
POLICY_KNOWN_BITS = 0x3F | 0xFFFF_0000  # NODBG NOKS ES NOSEND DOMAIN SEV; API major/minor


class LegacyState(Enum):
    """55766 Table 4 guest states used by a launch."""

    LUPDATE = "LUPDATE"
    LSECRET = "LSECRET"
    RUNNING = "RUNNING"


@dataclass
class LegacyContext:
    """A SEV/SEV-ES guest context."""

    handle: int
    asid: int
    policy: int
    tik: bytes
    state: LegacyState = LegacyState.LUPDATE
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    @property
    def es(self) -> bool:
        return enables_es(self.policy)


def enables_es(policy: int) -> bool:
    """Whether a SEV ``policy`` asks for SEV-ES (55766 Table 2, bit 2 ES)."""
    return bool(policy & POLICY_ES)


def measure_mac(
    tik: bytes, api: tuple[int, int], build: int, policy: int, ld: bytes, mnonce: bytes
) -> bytes:
    """MEASURE of LAUNCH_MEASURE (55766 §6.5) for a launch digest ``ld``."""
    message = bytes([MEASURE_CONTEXT, api[0], api[1], build]) + policy.to_bytes(4, "little")
    return hmac.new(tik, message + ld + mnonce, hashlib.sha256).digest()


class LegacyFirmware:
    """SEV/SEV-ES launch commands of one PSP."""

    def __init__(self, psp: SecureProcessor) -> None:
        self.psp = psp
        self._guests: dict[int, LegacyContext] = {}
        self._next_handle = 0x1000

    def launch_start(self, asid: int, policy: int, tik: bytes | None = None) -> int:
        """LAUNCH_START: a guest context for ``asid`` under the SEV ``policy`` (u32)."""
        command = "LAUNCH_START"
        if policy & ~POLICY_KNOWN_BITS:  # also every negative value and every one above a u32
            raise refuse(SevStatus.INVALID_PARAM, command, f"policy {policy:#x} sets reserved bits")
        version = self.psp.version
        if (policy >> 16 & 0xFF, policy >> 24) > (version.major, version.minor):
            raise refuse(SevStatus.POLICY_FAILURE, command, "policy needs a newer API version")
        if not self.psp.machine.engine.is_active(asid):
            raise refuse(SevStatus.INVALID_ASID, command, f"ASID {asid} has no key")
        if any(ctx.asid == asid for ctx in self._guests.values()):
            raise refuse(SevStatus.ASID_OWNED, command, f"ASID {asid} already has a guest")
        tik = tik if tik is not None else self.psp.random_bytes(TIK_SIZE)
        if len(tik) != TIK_SIZE:
            raise refuse(SevStatus.INVALID_PARAM, command, "the TIK is 16 bytes")
        handle = self._next_handle
        self._next_handle += 1
        self._guests[handle] = LegacyContext(handle, asid, policy, tik)
        return handle

    def _context(self, handle: int, command: str, state: LegacyState) -> LegacyContext:
        ctx = self._guests.get(handle)
        if ctx is None:
            raise refuse(SevStatus.INVALID_GUEST, command, f"no guest with handle {handle:#x}")
        if ctx.state is not state:
            raise refuse(SevStatus.INVALID_GUEST_STATE, command, f"guest is {ctx.state.value}")
        return ctx

    def launch_update_data(self, handle: int, spa: int, length: int) -> None:
        """LAUNCH_UPDATE_DATA: measure and encrypt ``length`` bytes at ``spa`` (16-aligned)."""
        command = "LAUNCH_UPDATE_DATA"
        ctx = self._context(handle, command, LegacyState.LUPDATE)
        if spa % 16 or length <= 0 or length % 16:
            raise refuse(SevStatus.INVALID_LENGTH, command, "region must be 16-byte aligned")
        machine = self.psp.machine
        try:
            machine.dram.check(spa, length)
        except UsageError as error:
            raise refuse(SevStatus.INVALID_ADDRESS, command, str(error)) from None
        data = machine.dram.read(spa, length)
        ctx.digest.update(data)
        machine.engine.write(ctx.asid, spa, data)

    def launch_update_vmsa(self, handle: int, spa: int) -> None:
        """LAUNCH_UPDATE_VMSA (SEV-ES): measure and encrypt one initial save area."""
        command = "LAUNCH_UPDATE_VMSA"
        ctx = self._context(handle, command, LegacyState.LUPDATE)
        if not ctx.es:
            raise refuse(SevStatus.POLICY_FAILURE, command, "the policy does not enable SEV-ES")
        machine = self.psp.machine
        try:
            machine.check_page(spa)
        except UsageError as error:
            raise refuse(SevStatus.INVALID_ADDRESS, command, str(error)) from None
        page = machine.dram.read(spa, PAGE_SIZE)
        ctx.digest.update(page)
        machine.engine.write_pages(ctx.asid, spa, page)

    def launch_measure(self, handle: int, mnonce: bytes | None = None) -> bytes:
        """LAUNCH_MEASURE: ``MEASURE || MNONCE`` (48 bytes); no more updates afterwards."""
        ctx = self._context(handle, "LAUNCH_MEASURE", LegacyState.LUPDATE)
        nonce = mnonce if mnonce is not None else self.psp.random_bytes(MNONCE_SIZE)
        if len(nonce) != MNONCE_SIZE:
            raise refuse(SevStatus.INVALID_PARAM, "LAUNCH_MEASURE", "MNONCE is 16 bytes")
        version = self.psp.version
        mac = measure_mac(
            ctx.tik,
            (version.major, version.minor),
            version.build,
            ctx.policy,
            ctx.digest.digest(),
            nonce,
        )
        ctx.state = LegacyState.LSECRET
        return mac + nonce

    def launch_finish(self, handle: int) -> None:
        """LAUNCH_FINISH: the guest may run."""
        ctx = self._context(handle, "LAUNCH_FINISH", LegacyState.LSECRET)
        ctx.state = LegacyState.RUNNING

    def decommission(self, handle: int) -> None:
        if self._guests.pop(handle, None) is None:
            raise refuse(SevStatus.INVALID_GUEST, "DECOMMISSION", f"no guest {handle:#x}")
