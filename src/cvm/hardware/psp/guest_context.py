"""The firmware's per-guest state (GCTX): what SNP_LAUNCH_* build and guest requests read.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), §4.1 "Guest Context" and
§5 "Guest Lifecycle" (states GSTATE_LAUNCH and GSTATE_RUNNING). The context lives inside the
firmware: the host names a guest only by its handle, and nothing here is ever returned to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.page_info import ZERO_DIGEST
from cvm.formats.snp.tcb_version import TcbVersion

VMPCK_COUNT = 4
NO_MIGRATION_AGENT = b"\xff" * 32


class GuestState(Enum):
    """56860 Table 6 "Guest States" (the subset an SNP guest without migration uses)."""

    LAUNCH = "GSTATE_LAUNCH"
    RUNNING = "GSTATE_RUNNING"


@dataclass
class GuestContext:
    """One guest's context: policy, launch digest, identity, message keys and sequence numbers."""

    handle: int
    asid: int
    policy: GuestPolicy
    launch_tcb: TcbVersion
    vmpcks: tuple[bytes, bytes, bytes, bytes]
    report_id: bytes
    gosvw: bytes = bytes(16)
    state: GuestState = GuestState.LAUNCH
    ld: bytes = ZERO_DIGEST
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    guest_svn: int = 0
    id_key_digest: bytes = bytes(48)
    author_key_digest: bytes = bytes(48)
    author_key_en: bool = False
    host_data: bytes = bytes(32)
    report_id_ma: bytes = NO_MIGRATION_AGENT
    # The sequence number of the last message each VMPCK protected (request or response).
    seqnos: list[int] = field(default_factory=lambda: [0] * VMPCK_COUNT)
    pages: int = 0

    @property
    def measurement(self) -> bytes:
        """The launch digest; after SNP_LAUNCH_FINISH it is the report's MEASUREMENT."""
        return self.ld
