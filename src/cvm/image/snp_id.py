"""The owner's ID block and ID auth for an SEV-SNP launch (SNP firmware ABI, SNP_LAUNCH_FINISH).

The ID block names the launch digest the owner expects, the guest's policy and IDs; the ID key
(ECDSA P-384) signs it, and the author key signs the ID key. The firmware refuses the launch when
a signature fails or the launch digest differs; the attestation report then carries the digests
of both keys (ID_KEY_DIGEST, AUTHOR_KEY_DIGEST). QEMU takes both structures base64-encoded
(``-object sev-snp-guest,id-block=...,id-auth=...,author-key-enabled=on``).
"""

from __future__ import annotations

from cvm.crypto import amd_ecdsa
from cvm.formats.snp.id_auth import IdAuthInfo, SnpPublicKey, SnpSignature
from cvm.formats.snp.id_block import IdBlock


def _public(key: amd_ecdsa.PrivateKey) -> SnpPublicKey:
    return SnpPublicKey(*amd_ecdsa.public_key_coordinates(key.public_key()))


def _sign(key: amd_ecdsa.PrivateKey, message: bytes) -> SnpSignature:
    r, s = amd_ecdsa.sign(key, message)
    return SnpSignature(amd_ecdsa.decode_component(r, "R"), amd_ecdsa.decode_component(s, "S"))


def sign_id_block(launch_digest: bytes, policy: int, id_key: amd_ecdsa.PrivateKey,
                  author_key: amd_ecdsa.PrivateKey) -> tuple[bytes, bytes]:
    """(ID block, ID auth) for a launch that must measure ``launch_digest`` under ``policy``."""
    block = IdBlock(launch_digest, policy=policy).to_bytes()
    id_public = _public(id_key)
    auth = IdAuthInfo(_sign(id_key, block), id_public,
                      _sign(author_key, id_public.to_bytes()), _public(author_key))
    return block, auth.to_bytes()
