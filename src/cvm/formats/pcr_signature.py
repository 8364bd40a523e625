"""systemd's signed PCR policies: the JSON of a UKI's ``.pcrsig`` section.

systemd ``src/boot/measure.c`` (``systemd-measure sign``, version 252) and
``docs/TPM2_PCR_MEASUREMENTS.md``; ``src/shared/tpm2-util.c`` ``tpm2_find_pcr_policy``: an
object keyed by PCR bank (``"sha256"``), each a list of entries ``{"pcrs": [11], "pkfp": hex
SHA-256 of the signing key as a DER PKCS#1 RSAPublicKey (OpenSSL's ``i2d_PublicKey``), "pol":
hex PolicyPCR digest, "sig": base64 signature}``. The signature is RSASSA-PKCS1-v1_5 with
SHA-256 over ``pol`` (with an empty policyRef, the digest the TPM's PolicyAuthorize checks:
TPM 2.0 Part 3 §23.16, aHash = H(approvedPolicy ‖ policyRef)). systemd-cryptsetup picks the
entry whose ``pol`` equals the PolicyPCR digest of the live PCR values.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cvm.errors import FormatError

BANKS = {"sha1": 20, "sha256": 32, "sha384": 48}
ENTRY_KEYS = {"pcrs", "pkfp", "pol", "sig"}


@dataclass(frozen=True)
class PcrSignatureEntry:
    """One signed policy: the PCRs, the key's fingerprint, the policy digest, the signature."""

    bank: str
    pcrs: tuple[int, ...]
    key_fingerprint: bytes
    policy: bytes
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {"pcrs": list(self.pcrs), "pkfp": self.key_fingerprint.hex(),
                "pol": self.policy.hex(), "sig": base64.b64encode(self.signature).decode()}


def _entry(bank: str, value: Any, where: str) -> PcrSignatureEntry:
    if not isinstance(value, dict) or set(value) != ENTRY_KEYS:
        raise FormatError(f".pcrsig: {where} must hold exactly pcrs, pkfp, pol, sig")
    pcrs = value["pcrs"]
    if not isinstance(pcrs, list) or not pcrs or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 24 for p in pcrs):
        raise FormatError(f".pcrsig: {where}.pcrs is not a list of PCR numbers")
    try:
        fingerprint = bytes.fromhex(value["pkfp"])
        policy = bytes.fromhex(value["pol"])
        signature = base64.b64decode(value["sig"], validate=True)
    except (TypeError, ValueError, binascii.Error):
        raise FormatError(f".pcrsig: {where} has a bad hex or base64 field") from None
    if len(fingerprint) != 32 or len(policy) != BANKS[bank] or not signature:
        raise FormatError(f".pcrsig: {where} has a fingerprint, policy or signature of the "
                          "wrong size")
    return PcrSignatureEntry(bank, tuple(pcrs), fingerprint, policy, signature)


def parse_pcr_signature(data: bytes) -> tuple[PcrSignatureEntry, ...]:
    """Every entry of a ``.pcrsig`` JSON document, bank by bank; FormatError if malformed."""
    try:
        document = json.loads(data.rstrip(b"\0"))
    except (ValueError, UnicodeDecodeError):
        raise FormatError(".pcrsig: not JSON") from None
    if not isinstance(document, dict) or not document:
        raise FormatError(".pcrsig: not an object of PCR banks")
    entries: list[PcrSignatureEntry] = []
    for bank, items in document.items():
        if bank not in BANKS or not isinstance(items, list):
            raise FormatError(f".pcrsig: {bank!r} is not a PCR bank with a list of entries")
        entries.extend(_entry(bank, item, f"{bank}[{i}]") for i, item in enumerate(items))
    return tuple(entries)


def pcr_signature_bytes(entries: tuple[PcrSignatureEntry, ...]) -> bytes:
    """The JSON document of ``entries`` (compact, as systemd-measure writes it)."""
    document: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        document.setdefault(entry.bank, []).append(entry.to_json())
    return json.dumps(document, separators=(",", ":")).encode()
