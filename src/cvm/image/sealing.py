"""The owner manufactures the vTPM, seals the volume key to the predicted boot, and seals the
vTPM's state at rest.

The vTPM is cvm's TPM 2.0 engine (:class:`cvm.vtpm.engine.Tpm`) driven over its command wire
format by the guest OS's client (:class:`cvm.guest.tpm.client.TpmClient`), exactly as the
guest will drive it later. The volume key goes into ``systemd-tpm2`` LUKS2 tokens
(:func:`cvm.guest.tpm.luks_token.enroll`, systemd 252's layout): a random 32-byte secret is
sealed under the storage primary to the policy of the token, and a PBKDF2 keyslot opens the
volume with ``base64(secret)``. Policies (TPM 2.0 Part 3 §23.7, §23.16):

* ``pcrs``: PolicyPCR over the chain's literal PCRs with their predicted sha256 values;
* ``signed``: PolicyAuthorize(the owner's PCR-policy key) — any PolicyPCR over PCR 11 the key
  signed (the UKI's ``.pcrsig``) — then PolicyPCR over PCR 7 (the Secure Boot policy), as
  ``systemd-cryptenroll --tpm2-public-key-pcrs=11 --tpm2-pcrs=7`` makes it.

The state (seeds, proofs; the SRK is derived from the storage seed, so the sealed objects load
only in this vTPM) is sealed in the :mod:`cvm.vtpm.state_file` envelope under a fresh 32-byte
state key, key source "released by a broker", counter 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cvm.disk.volume import Luks2Volume
from cvm.errors import UsageError
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.luks_token import KEYSLOT_KDF, SECRET_SIZE, enroll
from cvm.guest.tpm.seal import SealPolicy
from cvm.vtpm.engine import Tpm
from cvm.vtpm.state import PersistentState
from cvm.vtpm.state_file import MonotonicCounter, ReleasedKeyProvider, seal_state
from cvm.vtpm.templates import public_from_pem

STATE_KEY_SIZE = 32
LITERAL_PCRS = {"shim-grub": (4, 7, 8, 9), "uki": (4, 7, 11)}
SIGNED_PCRS = (11,)
SIGNED_LITERAL_PCRS = (7,)
Random = Callable[[int], bytes]


@dataclass(frozen=True)
class TokenPlan:
    """One token to enroll: its policy kind, literal PCRs and signed PCRs."""

    policy: str
    pcrs: tuple[int, ...]
    pubkey_pcrs: tuple[int, ...] = ()


def token_plans(chain: str, seal: str) -> tuple[TokenPlan, ...]:
    """The tokens of ``--seal`` for ``chain`` (docs/image-bundle.md, "Sealing and the vTPM")."""
    literal = TokenPlan("pcrs", LITERAL_PCRS[chain])
    signed = TokenPlan("signed", SIGNED_LITERAL_PCRS, SIGNED_PCRS)
    return {"pcrs": (literal,), "signed": (signed,), "both": (literal, signed)}[seal]


@dataclass(frozen=True)
class EnrolledToken:
    """What was enrolled: the token id, its keyslot and plan, and its policy digest."""

    token_id: int
    keyslot: int
    plan: TokenPlan
    policy_digest: bytes


class OwnerTpm:
    """A freshly manufactured vTPM on the owner's machine."""

    def __init__(self, random: Random) -> None:
        self.random = random
        self.tpm = Tpm(PersistentState.manufacture(random), random=random)
        self.client = TpmClient(self.tpm.execute)
        self.client.startup()

    def enroll(self, volume: Luks2Volume, volume_key: bytes, plan: TokenPlan,
               predicted: dict[int, bytes], pubkey_pem: bytes | None) -> EnrolledToken:
        """Seal a fresh secret to ``plan`` with the ``predicted`` sha256 PCR values."""
        signer = None
        if plan.pubkey_pcrs:
            if pubkey_pem is None:
                raise UsageError("a signed token needs the PCR-policy public key")
            signer = public_from_pem(pubkey_pem)
        policy = SealPolicy(PcrSelectionList.of("sha256", plan.pcrs), False, signer)
        values = [predicted[pcr] for pcr in plan.pcrs]
        before = set(volume.metadata.keyslots)
        token_id = enroll(volume, volume_key, self.client, policy, values,
                          self.random(SECRET_SIZE), None,
                          pubkey_pem if signer is not None else None, plan.pubkey_pcrs)
        (keyslot,) = set(volume.metadata.keyslots) - before
        return EnrolledToken(token_id, keyslot, plan, policy.digest(values).value)

    def sealed_state(self, state_key: bytes) -> bytes:
        """The state in its at-rest envelope (counter 1: a counter at 0 accepts it)."""
        provider = ReleasedKeyProvider(state_key)
        return seal_state(self.tpm.state.to_bytes(), provider, MonotonicCounter(0), self.random)


TOKEN_KEYSLOT_KDF = KEYSLOT_KDF
