"""PKCS#7 SignedData: parse (wrapped or bare), verify against one anchor as edk2 does, sign."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.crypto.authenticode import AuthenticodeSignature, sign_digest, spc_indirect_data
from cvm.crypto.pkcs7 import OID_DATA, parse_any, parse_signed_data, sign, verify_with_anchor
from cvm.crypto.x509_edk2 import (
    Certificate,
    PrivateKey,
    chain_to_anchor,
    generate_rsa_key,
    issue_certificate,
    load_certificate,
    load_private_key,
    pem,
    private_key_pem,
)
from cvm.errors import ChainError, FormatError, IntegrityError, SignatureError


@dataclass(frozen=True)
class Chain:
    root: Certificate
    mid: Certificate
    leaf: Certificate
    leaf_key: PrivateKey
    end_entity: Certificate


@pytest.fixture(scope="module")
def chain() -> Chain:
    root_key, mid_key, leaf_key = (generate_rsa_key() for _ in range(3))
    root = issue_certificate("Root", root_key)
    mid = issue_certificate("Mid", mid_key, (root, root_key))
    leaf = issue_certificate("Leaf", leaf_key, (mid, mid_key), ca=False)
    end_entity = issue_certificate("EE", mid_key, (leaf, leaf_key), ca=False)
    return Chain(root, mid, leaf, leaf_key, end_entity)


@pytest.mark.parametrize("bare", [False, True])
@pytest.mark.parametrize("attributes", [False, True])
@pytest.mark.parametrize("detached", [False, True])
def test_data_signatures(chain: Chain, bare: bool, attributes: bool, detached: bool) -> None:
    blob = sign(chain.leaf_key, chain.leaf, OID_DATA, b"content", detached=detached, bare=bare,
                attributes=attributes, extra_certificates=(chain.mid,))
    signed = parse_any(blob)
    assert signed.content == (None if detached else b"content")
    assert len(verify_with_anchor(signed, b"content", chain.root)) == 3
    assert len(verify_with_anchor(signed, b"content", chain.leaf)) == 1
    with pytest.raises(SignatureError):
        verify_with_anchor(signed, b"other", chain.root)
    if not bare:
        assert parse_signed_data(blob).signers[0].certificate == chain.leaf


def test_no_chain_to_an_unrelated_anchor(chain: Chain) -> None:
    blob = sign(chain.leaf_key, chain.leaf, OID_DATA, b"x")
    stranger = issue_certificate("Root", generate_rsa_key())
    with pytest.raises(ChainError):
        verify_with_anchor(parse_any(blob), b"x", stranger)
    with pytest.raises(ChainError):
        verify_with_anchor(parse_any(blob), b"x", chain.root)


def test_a_non_ca_certificate_cannot_issue(chain: Chain) -> None:
    assert chain_to_anchor(chain.end_entity, [chain.leaf, chain.mid], chain.root) is None
    assert chain_to_anchor(chain.leaf, [chain.mid], chain.root) == [
        chain.leaf, chain.mid, chain.root]


def test_authenticode_round_trip(chain: Chain) -> None:
    digest = bytes(range(32))
    signature = AuthenticodeSignature.parse(sign_digest(digest, chain.leaf_key, chain.leaf,
                                                        (chain.mid,)))
    assert signature.digest == digest and signature.digest_algorithm == "sha256"
    assert signature.signer == chain.leaf
    assert signature.signed_content == spc_indirect_data(digest)[2:]
    assert len(signature.verify(digest, chain.root)) == 3
    with pytest.raises(IntegrityError):
        signature.verify(bytes(32), chain.root)


def test_keys_and_certificates_load_as_pem_or_der(chain: Chain) -> None:
    assert load_certificate(pem(chain.root)) == chain.root
    key = load_private_key(private_key_pem(chain.leaf_key))
    assert key.public_key().public_numbers() == chain.leaf_key.public_key().public_numbers()
    with pytest.raises(FormatError):
        load_certificate(b"junk")
    with pytest.raises(FormatError):
        load_private_key(b"-----BEGIN junk")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_format_errors(blob: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_any(blob)
    with contextlib.suppress(FormatError):
        AuthenticodeSignature.parse(blob)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_signatures_only_raise_project_errors(chain: Chain, data: st.DataObject) -> None:
    blob = bytearray(sign_digest(bytes(32), chain.leaf_key, chain.leaf))
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] = data.draw(st.integers(0, 255))
    with contextlib.suppress(FormatError, SignatureError, ChainError, IntegrityError):
        AuthenticodeSignature.parse(bytes(blob)).verify(bytes(32), chain.leaf)
