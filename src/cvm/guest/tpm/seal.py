"""Sealing a secret to a PCR policy, and unsealing it, as systemd-cryptenroll does.

The policy of a sealed disk key (systemd ``src/shared/tpm2-util.c``, version 252, verified
against its tokens in notes/tpm.md section 5.1): optionally PolicyAuthorize(signing key Name,
empty policyRef) for PCRs whose values are signed (PCR 11 of a UKI), then PolicyPCR over the
bound PCRs of one bank, then PolicyAuthValue when a PIN is set (authValue = SHA-256(PIN)).
The object is a KEYEDHASH with fixedTPM|fixedParent under the ECC storage primary made from
the storage seed (TCG TPM 2.0 Library Part 3, revision 1.59, sections 12.1, 12.7, 23.7, 23.16
and 23.17 for the commands used).

These run on the caller's side (the guest OS at VMPL1, or the owner's machine): the secret and
the session values are transients of one call, returned to the caller and kept nowhere here;
inside the TPM they live only as its loaded objects and sessions do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cvm.errors import UsageError
from cvm.formats.tpm2.constants import TpmAlg, TpmRh, TpmSe
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.sealed_blob import SealedBlob
from cvm.formats.tpm2.signature import Signature
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.policy import PolicyDigest, approved_policy_hash
from cvm.vtpm.templates import sealed_template, srk_template


def pin_auth_value(pin: bytes) -> bytes:
    """The authValue systemd 252 derives from a PIN: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(pin).digest()


@dataclass(frozen=True)
class SignedPolicy:
    """An approved PolicyPCR signed by an authority (systemd-measure's ``pol``/``sig``)."""

    signer: Public
    selection: PcrSelectionList
    approved_policy: bytes
    signature: Signature


@dataclass(frozen=True)
class SealPolicy:
    """What a sealed secret is bound to."""

    selection: PcrSelectionList
    pin: bool = False
    signer: Public | None = None

    def digest(self, values: Sequence[bytes]) -> PolicyDigest:
        """The policy digest for the expected PCR ``values`` (selection order)."""
        policy = PolicyDigest.start()
        if self.signer is not None:
            policy = policy.authorize(self.signer.name())
        if self.selection.items():  # no PolicyPCR for a selection of no PCR, as systemd
            policy = policy.pcr(self.selection, values)
        return policy.auth_value() if self.pin else policy


def seal(client: TpmClient, secret: bytes, policy: bytes, pin: bytes | None = None) -> SealedBlob:
    """Create the sealed object under the ECC storage primary; returns the blob to store."""
    primary, _ = client.create_primary(TpmRh.OWNER, srk_template())
    try:
        auth = pin_auth_value(pin) if pin is not None else b""
        private, public = client.create(primary, sealed_template(policy), data=secret, auth=auth)
    finally:
        client.flush(primary)
    return SealedBlob(private, public)


def unseal(client: TpmClient, blob: SealedBlob, policy: SealPolicy, pin: bytes | None = None,
           signed: SignedPolicy | None = None) -> bytes:
    """Replay the policy in a policy session and unseal; TPM errors carry their TPM_RC."""
    if policy.pin and pin is None:
        raise UsageError("this secret is sealed with a PIN: give the PIN")
    if policy.signer is not None and signed is None:
        raise UsageError("this secret needs a signed PCR policy")
    primary, _ = client.create_primary(TpmRh.OWNER, srk_template())
    handles = [primary]
    try:
        item = client.load(primary, blob.private, blob.public)
        handles.append(item)
        session = client.start_auth_session(TpmSe.POLICY)
        handles.append(session.handle)
        if signed is not None:
            signer = client.load_external(signed.signer, TpmRh.OWNER)
            handles.append(signer)
            a_hash = approved_policy_hash(TpmAlg.SHA256, signed.approved_policy, b"")
            ticket = client.verify_signature(signer, a_hash, signed.signature)
            client.policy_pcr(session, signed.selection)
            client.policy_authorize(session, signed.approved_policy, b"",
                                    signed.signer.name(), ticket)
        if policy.selection.items():
            client.policy_pcr(session, policy.selection)
        if policy.pin:
            client.policy_auth_value(session)
        auth = pin_auth_value(pin) if pin is not None else b""
        return client.unseal(item, Auth(auth, session))
    finally:
        for handle in reversed(handles):
            client.flush(handle)
