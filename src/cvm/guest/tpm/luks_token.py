"""The ``systemd-tpm2`` LUKS2 token: a vTPM-sealed secret that opens a PBKDF2 keyslot.

systemd ``src/shared/tpm2-util.c`` (``tpm2_make_luks2_json`` / ``tpm2_parse_luks2_json``) and
``src/cryptenroll/cryptenroll-tpm2.c``, version 252 (notes/tpm.md section 5.1): the token is
``{"type": "systemd-tpm2", "keyslots": ["N"], "tpm2-blob": base64(TPM2B_PRIVATE ‖ TPM2B_PUBLIC),
"tpm2-pcrs": [...], "tpm2-pcr-bank": "sha256", "tpm2-primary-alg": "ecc", "tpm2-policy-hash":
hex, "tpm2-pin": bool}``, with ``"tpm2_pubkey_pcrs"`` and ``"tpm2_pubkey"`` (base64 PEM) when the
policy includes PolicyAuthorize for signed PCRs. The secret is 32 random bytes; the keyslot's
passphrase is ``base64(secret)`` and the keyslot uses PBKDF2-SHA512 with 1000 iterations
(``cryptsetup_set_minimal_pbkdf``). Fields of later versions (``tpm2_salt``, ``tpm2_srk``,
``tpm2_pcrlock``...) are kept when parsing; sharded tokens (array blobs) are refused.
The unsealed secret and the volume key are transients of :func:`unlock`, returned to the caller.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from cvm.crypto.tpm_keys import public_key_fingerprint
from cvm.disk.keyslot import KdfSpec
from cvm.disk.volume import Luks2Volume
from cvm.errors import FormatError, UsageError
from cvm.formats.pcr_signature import parse_pcr_signature
from cvm.formats.tpm2.constants import TpmAlg, hash_alg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.sealed_blob import SealedBlob
from cvm.formats.tpm2.signature import Signature
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.seal import SealPolicy, SignedPolicy, seal, unseal
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.templates import public_from_pem

TOKEN_TYPE = "systemd-tpm2"
SECRET_SIZE = 32
KEYSLOT_KDF = KdfSpec("pbkdf2", iterations=1000, hash="sha512")
_KNOWN = {"type", "keyslots", "tpm2-blob", "tpm2-pcrs", "tpm2-pcr-bank", "tpm2-primary-alg",
          "tpm2-policy-hash", "tpm2-pin", "tpm2_pubkey_pcrs", "tpm2_pubkey"}


def _pcr_list(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 24 for p in value
    ):
        raise FormatError(f"systemd-tpm2 token: {name} is not a list of PCR numbers")
    return tuple(value)


@dataclass(frozen=True)
class SystemdTpm2Token:
    """A parsed ``systemd-tpm2`` token."""

    keyslots: tuple[int, ...]
    blob: SealedBlob
    pcrs: tuple[int, ...]
    policy_hash: bytes
    pcr_bank: str = "sha256"
    primary_alg: str = "ecc"
    pin: bool = False
    pubkey_pem: bytes | None = None
    pubkey_pcrs: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, token: dict[str, Any]) -> SystemdTpm2Token:
        if token.get("type") != TOKEN_TYPE:
            raise FormatError(f"not a {TOKEN_TYPE} token: type {token.get('type')!r}")
        blob_text, policy_text = token.get("tpm2-blob"), token.get("tpm2-policy-hash")
        if isinstance(blob_text, list) or isinstance(policy_text, list):
            raise FormatError("sharded systemd-tpm2 tokens (array blobs) are not supported")
        if not isinstance(blob_text, str) or not isinstance(policy_text, str):
            raise FormatError("systemd-tpm2 token: tpm2-blob and tpm2-policy-hash are required")
        try:
            blob = SealedBlob.from_bytes(base64.b64decode(blob_text, validate=True))
            policy_hash = bytes.fromhex(policy_text)
            pubkey = token.get("tpm2_pubkey")
            pem = base64.b64decode(pubkey, validate=True) if isinstance(pubkey, str) else None
        except (binascii.Error, ValueError) as error:
            if isinstance(error, FormatError):
                raise
            raise FormatError("systemd-tpm2 token: bad base64 or hex field") from None
        keyslots = token.get("keyslots")
        if not isinstance(keyslots, list) or not all(
            isinstance(k, str) and k.isdigit() for k in keyslots
        ):
            raise FormatError("systemd-tpm2 token: keyslots is not a list of numbers")
        bank = token.get("tpm2-pcr-bank", "sha256")
        if not isinstance(bank, str):
            raise FormatError("systemd-tpm2 token: tpm2-pcr-bank is not a string")
        hash_alg(bank)
        pin = token.get("tpm2-pin", False)
        if not isinstance(pin, bool):
            raise FormatError("systemd-tpm2 token: tpm2-pin is not a boolean")
        return cls(
            tuple(int(k) for k in keyslots), blob, _pcr_list(token.get("tpm2-pcrs", []),
                                                             "tpm2-pcrs"),
            policy_hash, bank, str(token.get("tpm2-primary-alg", "ecc")), pin, pem,
            _pcr_list(token.get("tpm2_pubkey_pcrs", []), "tpm2_pubkey_pcrs"),
            {k: v for k, v in token.items() if k not in _KNOWN},
        )

    def to_json(self) -> dict[str, Any]:
        token: dict[str, Any] = {
            "type": TOKEN_TYPE,
            "keyslots": [str(k) for k in self.keyslots],
            "tpm2-blob": base64.b64encode(self.blob.to_bytes()).decode(),
            "tpm2-pcrs": list(self.pcrs),
            "tpm2-pcr-bank": self.pcr_bank,
            "tpm2-primary-alg": self.primary_alg,
            "tpm2-policy-hash": self.policy_hash.hex(),
            "tpm2-pin": self.pin,
        }
        if self.pubkey_pem is not None:
            token["tpm2_pubkey_pcrs"] = list(self.pubkey_pcrs)
            token["tpm2_pubkey"] = base64.b64encode(self.pubkey_pem).decode()
        return {**token, **self.extra}

    def seal_policy(self) -> SealPolicy:
        signer = public_from_pem(self.pubkey_pem) if self.pubkey_pem is not None else None
        return SealPolicy(PcrSelectionList.of(self.pcr_bank, self.pcrs), self.pin, signer)


def enroll(volume: Luks2Volume, volume_key: bytes, client: TpmClient, policy: SealPolicy,
           values: list[bytes], secret: bytes, pin: bytes | None = None,
           pubkey_pem: bytes | None = None, pubkey_pcrs: tuple[int, ...] = ()) -> int:
    """Seal ``secret`` to ``policy`` and add its keyslot and token; returns the token id."""
    if len(secret) != SECRET_SIZE:
        raise UsageError("the sealed secret must be 32 bytes")
    if policy.pin != (pin is not None):
        raise UsageError("the policy's PIN flag and the PIN given disagree")
    digest = policy.digest(values)
    blob = seal(client, secret, digest.value, pin)
    slot = volume.add_keyslot(volume_key, base64.b64encode(secret), KEYSLOT_KDF)
    bank = policy.selection.selections[0].bank if policy.selection.selections else "sha256"
    token = SystemdTpm2Token(
        (slot,), blob, tuple(p for _, p in policy.selection.items()), digest.value, bank,
        "ecc", pin is not None, pubkey_pem, pubkey_pcrs,
    )
    return volume.add_token(token.to_json())


def tpm2_tokens(volume: Luks2Volume) -> dict[int, SystemdTpm2Token]:
    """The volume's ``systemd-tpm2`` tokens, parsed."""
    return {number: SystemdTpm2Token.from_json(token)
            for number, token in volume.tokens.items() if token.get("type") == TOKEN_TYPE}


def unlock(volume: Luks2Volume, token: SystemdTpm2Token, client: TpmClient,
           pin: bytes | None = None, signed: SignedPolicy | None = None) -> bytes:
    """Unseal the token's secret with the live PCRs and return the volume key."""
    secret = unseal(client, token.blob, token.seal_policy(), pin, signed)
    return volume.unlock(base64.b64encode(secret))


def signed_policy(token: SystemdTpm2Token, pcr_signature: bytes, client: TpmClient,
                  where: str) -> SignedPolicy:
    """The entry of a ``.pcrsig`` document (a UKI's section, or systemd-measure's JSON) that
    authorizes ``token``'s signed PCRs now, as systemd-cryptsetup picks it: the token's bank and
    PCRs, signed by the token's own key (entries of other keys are skipped), and a policy digest
    equal to PolicyPCR over the live values the vTPM reports. FormatError if none does;
    ``where`` names the document in the errors."""
    if token.pubkey_pem is None:
        raise UsageError("the token has no public key: it needs no signed policy")
    try:
        entries = parse_pcr_signature(pcr_signature)
    except FormatError as error:
        raise FormatError(f"{where}: {error}") from None
    selection = PcrSelectionList.of(token.pcr_bank, token.pubkey_pcrs)
    live = PolicyDigest.start().pcr(selection, client.pcr_read(selection)[2]).value
    key = public_key_fingerprint(token.pubkey_pem)
    for entry in entries:
        if (entry.bank == token.pcr_bank and entry.pcrs == token.pubkey_pcrs
                and entry.key_fingerprint == key and entry.policy == live):
            return SignedPolicy(public_from_pem(token.pubkey_pem), selection, entry.policy,
                                Signature(TpmAlg.RSASSA, TpmAlg.SHA256, sig=entry.signature))
    raise FormatError(f"{where}: no signed policy for the token's key and the live PCR "
                      f"{'+'.join(map(str, token.pubkey_pcrs))} ({token.pcr_bank})")
