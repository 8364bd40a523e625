"""The SVSM obtains the vTPM state key from a relying party, after attestation.

At start, at VMPL0 (docs/image-bundle.md, "How the SVSM gets the state key"): the SVSM derives
an ephemeral P-384 key from its randomness and keeps the private scalar in its key page, asks
the relying party for a nonce, gets an SNP report at VMPL0 whose REPORT_DATA = SHA-512(nonce ‖
x ‖ y) from the PSP over VMPCK0, and hands the report and its public point to the relying party
(:class:`StateKeyBroker`; the transport — in process today, a key broker service later —
carries only bytes). A relying party that accepts the report's measurement, policy and TCB
answers with the state key wrapped to the point (:mod:`cvm.crypto.key_transport`); the SVSM
unwraps it with the scalar read back from its page, writes the key into the key page and wipes
the scalar. A wrong launch measurement gets nothing, so the vTPM state never opens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from cvm.crypto.key_transport import COORDINATE_SIZE, CURVE, public_point, report_data, unwrap
from cvm.crypto.tpm_keys import ecc_from_seed
from cvm.errors import StatusError, UsageError
from cvm.guest.kernel.guest_request import GuestRequester
from cvm.hardware.vcpu import Vcpu

SCALAR_OFFSET = 0x100  # in the SVSM's key page, after the state key
SCALAR_SIZE = COORDINATE_SIZE
STATE_KEY_SIZE = 32


class StateKeyBroker(Protocol):
    """The relying party as the SVSM sees it: bytes in, bytes out."""

    def challenge(self) -> bytes:
        """A fresh nonce for the report."""
        ...

    def release(self, report: bytes, nonce: bytes, public: tuple[bytes, bytes]) -> bytes:
        """The state key wrapped to ``public`` for an acceptable report; raises otherwise."""
        ...


@runtime_checkable
class KeyReleaseAgent(Protocol):
    """An agent that runs the whole exchange itself (a key broker service's protocol:
    :class:`cvm.guest.svsm.kbs_agent.KbsAgent`) and leaves the state key at ``key_gpa``."""

    def obtain_state_key(self, vcpu: Vcpu, requester: GuestRequester, key_gpa: int,
                         random: Callable[[int], bytes]) -> None:
        """Attest, receive the key, write it at ``key_gpa``; raise if refused."""
        ...


def obtain_state_key(vcpu: Vcpu, requester: GuestRequester, key_gpa: int,
                     broker: StateKeyBroker, random: Callable[[int], bytes]) -> None:
    """Attest, receive the wrapped key, and leave the state key at ``key_gpa`` (VMPL0)."""
    scalar_gpa = key_gpa + SCALAR_OFFSET
    vcpu.write(scalar_gpa, ecc_from_seed(CURVE, random(SCALAR_SIZE), b"svsm state key release"))
    try:
        public = public_point(vcpu.read(scalar_gpa, SCALAR_SIZE))
        nonce = broker.challenge()
        response = requester.report(report_data(nonce, public), 0)
        if response.status:
            raise StatusError(f"MSG_REPORT_REQ failed with status {response.status:#x}",
                              response.status)
        wrapped = broker.release(response.report, nonce, public)
        key = unwrap(vcpu.read(scalar_gpa, SCALAR_SIZE), wrapped)
        if len(key) != STATE_KEY_SIZE:
            raise UsageError(f"the relying party released a {len(key)}-byte state key")
        vcpu.write(key_gpa, key)
    finally:
        vcpu.write(scalar_gpa, bytes(SCALAR_SIZE))
