"""The owner's ID block and ID auth: the block names the digest and policy asked for, the ID
key signs the block and the author key signs the ID key — each signature checked here with
``cryptography``'s own ECDSA, not cvm's, and the firmware's launch check accepts the pair."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cvm.amd.kds import ChipFuses
from cvm.crypto import amd_ecdsa
from cvm.formats.snp.id_auth import IdAuthInfo, SnpSignature
from cvm.formats.snp.id_block import IdBlock
from cvm.formats.snp.page_info import PageType
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.vmm import Hypervisor
from cvm.image.snp_id import sign_id_block

DIGEST = hashlib.sha384(b"the launch").digest()
POLICY = 0x3_0000 | 1 << 19


def _verify(key: ec.EllipticCurvePrivateKey, message: bytes, signature: SnpSignature) -> None:
    key.public_key().verify(encode_dss_signature(signature.r, signature.s), message,
                            ec.ECDSA(hashes.SHA384()))


def test_the_block_names_the_digest_and_policy_and_both_keys_sign() -> None:
    id_key = amd_ecdsa.private_key_from_scalar(0x1D)
    author_key = amd_ecdsa.private_key_from_scalar(0xA7)
    block, auth_bytes = sign_id_block(DIGEST, POLICY, id_key, author_key)
    assert block == IdBlock(DIGEST, policy=POLICY).to_bytes()
    auth = IdAuthInfo.from_bytes(auth_bytes)
    assert auth.to_bytes() == auth_bytes
    numbers = id_key.public_key().public_numbers()
    assert (auth.id_key.qx, auth.id_key.qy) == (numbers.x, numbers.y)
    numbers = author_key.public_key().public_numbers()
    assert auth.author_key is not None and auth.id_key_sig is not None
    assert (auth.author_key.qx, auth.author_key.qy) == (numbers.x, numbers.y)
    _verify(id_key, block, auth.id_block_sig)
    _verify(author_key, auth.id_key.to_bytes(), auth.id_key_sig)


def test_the_firmware_accepts_the_pair_and_reports_both_key_digests() -> None:
    host = Hypervisor(Machine(1 << 30))
    psp = SecureProcessor(host.machine, ChipFuses("Milan", bytes(range(64)), b"\x5a" * 64))
    host.machine.engine.activate(1)
    handle = psp.snp_launch_start(1, POLICY)
    page = host.allocate_page()
    host.machine.host_write(page, b"\x42" * 0x1000)
    host.machine.rmp.rmpupdate(page, assigned=True, asid=1, gpa=0)
    psp.snp_launch_update(handle, page, PageType.NORMAL)
    id_key = amd_ecdsa.private_key_from_scalar(3)
    author_key = amd_ecdsa.private_key_from_scalar(5)
    block, auth = sign_id_block(psp.guest_measurement(handle), POLICY, id_key, author_key)
    psp.snp_launch_finish(handle, id_block=block, id_auth=auth)
    context = psp._guests[handle]
    parsed = IdAuthInfo.from_bytes(auth)
    assert parsed.author_key is not None
    assert (context.id_key_digest, context.author_key_digest, context.author_key_en) == (
        parsed.id_key.digest(), parsed.author_key.digest(), True)
