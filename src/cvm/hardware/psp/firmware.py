"""The AMD Secure Processor firmware of one chip: TCB, SNP launch commands, guest requests.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860):

* §8.16 SNP_LAUNCH_START — creates a guest context under a guest policy (Table 9), refused
  with POLICY_FAILURE when the platform cannot honour it (ABI version, SMT, migration agent,
  single socket, AES-256-XTS, RAPL, ciphertext hiding);
* §8.17 SNP_LAUNCH_UPDATE — takes one pre-guest page (assigned to the guest's ASID in the
  RMP, not yet validated), writes its final contents encrypted in place with the guest key,
  marks it validated and folds a PAGE_INFO (Table 67) into the launch digest; ZERO pages are
  zeroed, SECRETS pages filled by the firmware (Table 71), CPUID pages checked
  (:mod:`.cpuid_policy`), VMSA pages become the guest's immutable save areas;
* §8.18 SNP_LAUNCH_FINISH — checks the optional ID block and ID auth (Tables 75/76);
* §8.22 SNP_DBG_DECRYPT — only for a guest whose policy sets DEBUG;
* §8.26 SNP_GUEST_REQUEST — the encrypted message channel (:mod:`.guest_request`);
* §8.10 SNP_DOWNLOAD_FIRMWARE_EX / §8.11 SNP_COMMIT / §8.13 SNP_CONFIG — the TCB: an update
  may go down only as far as the committed TCB; COMMIT raises that floor; CONFIG sets the
  REPORTED_TCB (never above the current one).

The chip's fuses (CHIP_ID and its secret) come from the emulated vendor's manufacturing; the
VCEK is derived here from the secret and the reported TCB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cvm.amd.kds import ChipFuses
from cvm.amd.product import Product, product_named
from cvm.crypto import amd_ecdsa
from cvm.crypto.vcek_key import derive_vcek_private_key
from cvm.errors import FormatError, SignatureError, UsageError
from cvm.formats.snp.cpuid_page import CpuidPage
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.id_auth import IdAuthInfo, SnpPublicKey, SnpSignature
from cvm.formats.snp.id_block import IdBlock
from cvm.formats.snp.page_info import (
    PAGE_SIZE,
    ZERO_DIGEST,
    PageType,
    contents_digest,
    measure_record,
)
from cvm.formats.snp.platform_info import PlatformInfo
from cvm.formats.snp.secrets_page import SecretsPage
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.formats.snp.vmsa import SevFeatures, Vmsa
from cvm.hardware.machine import Machine
from cvm.hardware.psp.cpuid_policy import check_cpuid_page, platform_cpuid
from cvm.hardware.psp.guest_context import GuestContext, GuestState
from cvm.hardware.psp.guest_request import handle_guest_request
from cvm.hardware.psp.launch_update import PLAIN_TYPES, launch_pages, pre_guest_pages
from cvm.hardware.psp.status import SevStatus, refuse

VMPCK_SIZE = 32
REPORT_ID_SIZE = 32
HOST_DATA_SIZE = 32


@dataclass(frozen=True)
class FirmwareVersion:
    """API major.minor and build of the firmware (reported at 0x1E8..0x1EE of a report)."""

    major: int = 1
    minor: int = 55
    build: int = 24


class SecureProcessor:
    """The PSP of one chip on a :class:`~cvm.hardware.machine.Machine`."""

    def __init__(
        self,
        machine: Machine,
        fuses: ChipFuses,
        *,
        tcb: TcbVersion | None = None,
        version: FirmwareVersion = FirmwareVersion(),
        platform_info: PlatformInfo | None = None,
        sockets: int = 1,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self.machine = machine
        self.product: Product = product_named(fuses.product)
        self._fuses = fuses
        layout = self.product.tcb_layout
        self.current_tcb = tcb or TcbVersion(
            boot_loader=4, tee=0, snp=22, microcode=213, layout=layout
        )
        if self.current_tcb.layout is not layout:
            raise UsageError(f"a {self.product.name} TCB uses the {layout.name} layout")
        self.committed_tcb = self.current_tcb
        self.version = version
        self.committed_version = version
        self._reported_tcb: TcbVersion | None = None
        self.platform_info = platform_info or PlatformInfo(
            smt_en=True, ecc_en=True, alias_check_complete=True
        )
        self.sockets = sockets
        self.random_bytes = random_bytes or machine.random_bytes
        self.signature = _cpuid_signature(self.product)
        self.cpuid = platform_cpuid(self.signature)
        self._guests: dict[int, GuestContext] = {}
        self._next_handle = 1
        self._vceks: dict[bytes, amd_ecdsa.PrivateKey] = {}

    # -- identity and TCB -----------------------------------------------------------------------
    @property
    def chip_id(self) -> bytes:
        return self._fuses.chip_id

    @property
    def reported_tcb(self) -> TcbVersion:
        """The TCB reports claim and the VCEK is derived from (SNP_CONFIG, else current)."""
        return _reported(self._reported_tcb, self.current_tcb)

    def vcek_private_key(self, tcb: TcbVersion) -> amd_ecdsa.PrivateKey:
        """The VCEK at ``tcb`` (derived from the chip secret; never leaves the PSP)."""
        key = self._vceks.get(tcb.to_bytes())
        if key is None:
            key = derive_vcek_private_key(self._fuses.chip_secret, tcb, self.product.name)
            self._vceks[tcb.to_bytes()] = key
        return key

    def vcek_public_key(self, tcb: TcbVersion) -> amd_ecdsa.PublicKey:
        return self.vcek_private_key(tcb).public_key()

    def download_firmware(self, tcb: TcbVersion, version: FirmwareVersion) -> None:
        """SNP_DOWNLOAD_FIRMWARE_EX: install firmware of ``tcb``; not below the committed TCB."""
        if tcb.layout is not self.product.tcb_layout:
            raise refuse(SevStatus.INVALID_PARAM, "SNP_DOWNLOAD_FIRMWARE_EX", "wrong TCB layout")
        if not tcb.at_least(self.committed_tcb):
            raise refuse(
                SevStatus.BAD_SVN,
                "SNP_DOWNLOAD_FIRMWARE_EX",
                f"TCB {tcb} is below the committed TCB {self.committed_tcb}",
            )
        self.current_tcb = tcb
        self.version = version
        if self._reported_tcb is not None and not self._reported_tcb.at_most(tcb):
            self._reported_tcb = None

    def boot_firmware(self, tcb: TcbVersion, version: FirmwareVersion) -> None:
        """A platform reset into another firmware image written to the SPI flash directly.

        This is the rollback the whitepaper's threat table names: it bypasses the anti-rollback
        check of SNP_DOWNLOAD_FIRMWARE_EX, but the firmware that boots derives the VCEK of its
        own TCB, so every report it signs says which (old) TCB it is. Guests do not survive.
        """
        if tcb.layout is not self.product.tcb_layout:
            raise UsageError(f"a {self.product.name} TCB uses the {tcb.layout.name} layout")
        self._guests.clear()
        self.current_tcb = self.committed_tcb = tcb
        self.version = self.committed_version = version
        self._reported_tcb = None

    def commit(self) -> None:
        """SNP_COMMIT: the current firmware becomes the floor for later downgrades."""
        self.committed_tcb = self.current_tcb
        self.committed_version = self.version

    def config(self, reported_tcb: TcbVersion | None) -> None:
        """SNP_CONFIG: set REPORTED_TCB (None: follow the current TCB)."""
        if reported_tcb is not None and not reported_tcb.at_most(self.current_tcb):
            raise refuse(SevStatus.INVALID_PARAM, "SNP_CONFIG", "REPORTED_TCB above current TCB")
        self._reported_tcb = reported_tcb

    # -- SNP_LAUNCH_START -----------------------------------------------------------------------
    def _policy_problem(self, policy: GuestPolicy) -> str | None:
        if (policy.abi_major, policy.abi_minor) > (self.version.major, self.version.minor):
            return (
                f"policy needs ABI {policy.abi_major}.{policy.abi_minor}, "
                f"firmware is {self.version.major}.{self.version.minor}"
            )
        problems = {
            "SMT is enabled but the policy forbids it": (
                self.platform_info.smt_en and not policy.smt
            ),
            "the platform has more than one socket": policy.single_socket and self.sockets > 1,
            "the memory encryption engine is AES-128": policy.mem_aes_256_xts,
            "RAPL is not disabled": policy.rapl_dis and not self.platform_info.rapl_dis,
            "ciphertext hiding is not enabled": (
                policy.ciphertext_hiding_dram and not self.platform_info.ciphertext_hiding_dram_en
            ),
        }
        return next((text for text, broken in problems.items() if broken), None)

    def snp_launch_start(
        self, asid: int, policy: int, *, gosvw: bytes = bytes(16), migration_agent: bool = False
    ) -> int:
        """SNP_LAUNCH_START: a new guest context for ``asid``; returns its handle."""
        command = "SNP_LAUNCH_START"
        try:
            parsed = GuestPolicy.from_int(policy)
        except FormatError as error:
            raise refuse(SevStatus.INVALID_PARAM, command, str(error)) from None
        if migration_agent:
            raise refuse(SevStatus.POLICY_FAILURE, command, "no migration agent support")
        problem = self._policy_problem(parsed)
        if problem is not None:
            raise refuse(SevStatus.POLICY_FAILURE, command, problem)
        if not self.machine.engine.is_active(asid):
            raise refuse(SevStatus.INVALID_ASID, command, f"ASID {asid} has no key")
        if any(ctx.asid == asid for ctx in self._guests.values()):
            raise refuse(SevStatus.ASID_OWNED, command, f"ASID {asid} already has a guest")
        if len(gosvw) != 16:
            raise refuse(SevStatus.INVALID_PARAM, command, "GOSVW is 16 bytes")
        keys = tuple(self.random_bytes(VMPCK_SIZE) for _ in range(4))
        handle = self._next_handle
        self._next_handle += 1
        self._guests[handle] = GuestContext(
            handle=handle,
            asid=asid,
            policy=parsed,
            launch_tcb=self.current_tcb,
            vmpcks=(keys[0], keys[1], keys[2], keys[3]),
            report_id=self.random_bytes(REPORT_ID_SIZE),
            gosvw=gosvw,
        )
        return handle

    def _context(self, handle: int, command: str, state: GuestState) -> GuestContext:
        ctx = self._guests.get(handle)
        if ctx is None:
            raise refuse(SevStatus.INVALID_GUEST, command, f"no guest with handle {handle}")
        if ctx.state is not state:
            raise refuse(SevStatus.INVALID_GUEST_STATE, command, f"guest is {ctx.state.value}")
        return ctx

    def guest_measurement(self, handle: int) -> bytes:
        """The current launch digest of a guest (what a host may learn: it is in reports)."""
        ctx = self._guests.get(handle)
        if ctx is None:
            raise refuse(SevStatus.INVALID_GUEST, "SNP_GUEST_STATUS", f"no guest {handle}")
        return ctx.ld

    # -- SNP_LAUNCH_UPDATE ----------------------------------------------------------------------
    def _page_contents(self, ctx: GuestContext, page_type: PageType, plain: bytes) -> bytes:
        if page_type is PageType.SECRETS:
            return SecretsPage(ctx.vmpcks, fms=self.signature, gosvw=ctx.gosvw).to_bytes()
        if page_type is PageType.VMSA:
            vmsa = Vmsa.from_bytes(plain)
            if not vmsa.registers["sev_features"] & SevFeatures.SNP_ACTIVE:
                raise refuse(
                    SevStatus.INVALID_PARAM,
                    "SNP_LAUNCH_UPDATE",
                    "VMSA SEV_FEATURES lacks SNPActive",
                )
        return plain

    def _check_cpuid(self, spa: int, plain: bytes) -> None:
        """Refuse an out-of-policy CPUID table, writing the corrected one back to the page."""
        command = "SNP_LAUNCH_UPDATE"
        try:
            table = CpuidPage.from_bytes(plain)
        except FormatError as error:
            raise refuse(SevStatus.INVALID_PARAM, command, str(error)) from None
        corrected, problems = check_cpuid_page(table, self.cpuid)
        if problems:
            self.machine.dram.write(spa, corrected.to_bytes())
            reasons = "; ".join(problems)
            raise refuse(SevStatus.INVALID_PARAM, command, f"CPUID page rejected: {reasons}")

    def snp_launch_update(
        self, handle: int, spa: int, page_type: PageType | int, *, imi_page: bool = False
    ) -> None:
        """SNP_LAUNCH_UPDATE of the pre-guest page at ``spa`` (its GPA is the RMP entry's)."""
        self.snp_launch_update_pages(handle, (spa,), page_type, imi_page=imi_page)

    def snp_launch_update_pages(
        self,
        handle: int,
        spas: Sequence[int],
        page_type: PageType | int,
        *,
        imi_page: bool = False,
    ) -> None:
        """SNP_LAUNCH_UPDATE of each page of ``spas`` in order, as KVM issues it for a range:
        the first page refused ends the run with its refusal, the pages before it launched."""
        command = "SNP_LAUNCH_UPDATE"
        ctx = self._context(handle, command, GuestState.LAUNCH)
        try:
            kind = PageType(page_type)
        except ValueError as error:
            raise refuse(SevStatus.INVALID_PARAM, command, str(error)) from None
        pages, refusal = pre_guest_pages(self.machine, ctx, spas)
        if kind in PLAIN_TYPES:
            launch_pages(self.machine, ctx, pages, kind, imi_page)
        else:
            for spa, gpa in pages:
                self._launch_page(ctx, spa, gpa, kind, imi_page)
        if refusal is not None:
            raise refusal

    def _launch_page(
        self, ctx: GuestContext, spa: int, gpa: int, kind: PageType, imi_page: bool
    ) -> None:
        """One checked SECRETS, CPUID or VMSA page: the firmware's contents and checks."""
        plain = self.machine.dram.read(spa, PAGE_SIZE)
        if kind is PageType.CPUID:
            self._check_cpuid(spa, plain)
        contents = self._page_contents(ctx, kind, plain)
        digest = measure_record(ctx.ld, contents_digest(kind, contents), kind, gpa, imi_page)
        self.machine.engine.write_pages(ctx.asid, spa, contents)
        self.machine.rmp.firmware_assign(spa, ctx.asid, gpa, vmsa=kind is PageType.VMSA)
        ctx.ld = digest
        ctx.pages += 1

    # -- SNP_LAUNCH_FINISH ----------------------------------------------------------------------
    def _check_id_block(self, ctx: GuestContext, id_block: bytes, id_auth: bytes) -> None:
        command = "SNP_LAUNCH_FINISH"
        try:
            block = IdBlock.from_bytes(id_block)
            auth = IdAuthInfo.from_bytes(id_auth)
        except FormatError as error:
            raise refuse(SevStatus.INVALID_PARAM, command, str(error)) from None
        _verify(auth.id_key, id_block, auth.id_block_sig, "ID block")
        if auth.author_key is not None and auth.id_key_sig is not None:
            _verify(auth.author_key, auth.id_key.to_bytes(), auth.id_key_sig, "ID key")
        if block.ld != ctx.ld:
            raise refuse(
                SevStatus.BAD_MEASUREMENT,
                command,
                f"ID block LD {block.ld.hex()} differs from the launch digest {ctx.ld.hex()}",
            )
        if block.policy != ctx.policy.to_int():
            raise refuse(SevStatus.POLICY_FAILURE, command, "ID block policy differs")
        ctx.family_id, ctx.image_id, ctx.guest_svn = (
            block.family_id,
            block.image_id,
            block.guest_svn,
        )
        ctx.id_key_digest = auth.id_key.digest()
        if auth.author_key is not None:
            ctx.author_key_digest = auth.author_key.digest()
            ctx.author_key_en = True

    def snp_launch_finish(
        self,
        handle: int,
        *,
        id_block: bytes | None = None,
        id_auth: bytes | None = None,
        host_data: bytes = bytes(HOST_DATA_SIZE),
    ) -> bytes:
        """SNP_LAUNCH_FINISH: check the ID block, seal the launch; returns the measurement."""
        command = "SNP_LAUNCH_FINISH"
        ctx = self._context(handle, command, GuestState.LAUNCH)
        if len(host_data) != HOST_DATA_SIZE:
            raise refuse(SevStatus.INVALID_PARAM, command, "HOST_DATA is 32 bytes")
        if (id_block is None) != (id_auth is None):
            raise refuse(SevStatus.INVALID_PARAM, command, "ID block and ID auth go together")
        if id_block is not None and id_auth is not None:
            self._check_id_block(ctx, id_block, id_auth)
        if ctx.ld == ZERO_DIGEST:
            raise refuse(SevStatus.INVALID_GUEST_STATE, command, "nothing was launched")
        ctx.host_data = host_data
        ctx.state = GuestState.RUNNING
        return ctx.ld

    # -- SNP_GUEST_REQUEST / teardown -----------------------------------------------------------
    def snp_guest_request(self, handle: int, request_page: bytes) -> bytes:
        """SNP_GUEST_REQUEST: one encrypted request page in, one response page out."""
        ctx = self._context(handle, "SNP_GUEST_REQUEST", GuestState.RUNNING)
        return handle_guest_request(self, ctx, request_page)

    def snp_dbg_decrypt(self, handle: int, spa: int) -> bytes:
        """SNP_DBG_DECRYPT (56860 §8.22): a guest page in the clear, only if the policy allows."""
        command = "SNP_DBG_DECRYPT"
        ctx = self._guests.get(handle)
        if ctx is None:
            raise refuse(SevStatus.INVALID_GUEST, command, f"no guest with handle {handle}")
        if not ctx.policy.debug:
            raise refuse(SevStatus.POLICY_FAILURE, command, "the guest policy forbids debugging")
        entry = self.machine.rmp.entry(spa)
        if not entry.assigned or entry.asid != ctx.asid:
            raise refuse(SevStatus.INVALID_PAGE_OWNER, command, f"{spa:#x} is not this guest's")
        return self.machine.engine.read_pages(ctx.asid, spa - spa % PAGE_SIZE, 1)

    def snp_decommission(self, handle: int) -> None:
        """SNP_DECOMMISSION: forget the guest context (its keys die with it)."""
        if self._guests.pop(handle, None) is None:
            raise refuse(SevStatus.INVALID_GUEST, "SNP_DECOMMISSION", f"no guest {handle}")

    def chip_secret_for_derivation(self) -> bytes:
        """The chip secret, for the key derivations that run inside this firmware only."""
        return self._fuses.chip_secret


def _cpuid_signature(product: Product) -> int:
    """CPUID(1).EAX of the product (AMD 25481 Fn0000_0001_EAX encoding)."""
    family, model = product.cpuid_fam_id, product.cpuid_mod_id
    extended = family - 0xF if family > 0xF else 0
    return (
        extended << 20
        | (model >> 4) << 16
        | min(family, 0xF) << 8
        | (model & 0xF) << 4
        | product.cpuid_step
    )


def _reported(configured: TcbVersion | None, current: TcbVersion) -> TcbVersion:
    """REPORTED_TCB: what SNP_CONFIG set, else the current TCB."""
    return configured if configured is not None else current


def _verify(key: SnpPublicKey, message: bytes, signature: SnpSignature, what: str) -> None:
    try:
        public = amd_ecdsa.public_key_from_coordinates(key.qx, key.qy)
        amd_ecdsa.verify(public, message, signature.r_bytes, signature.s_bytes)
    except (SignatureError, UsageError, FormatError) as error:
        raise refuse(
            SevStatus.BAD_SIGNATURE, "SNP_LAUNCH_FINISH", f"{what} signature: {error}"
        ) from None
