"""Quote and Sign: signatures verify, digests and nonces are the ones asked for."""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import SignatureError, StatusError
from cvm.formats.tpm2.attest import QuoteAttest
from cvm.formats.tpm2.constants import TpmAlg, TpmRh
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.formats.tpm2.signature import SigScheme
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import ak_template, signing_key_template, srk_template
from cvm.vtpm.tpm_object import verify_digest


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_quote_verifies(client: TpmClient, tpm: Tpm, kind: str) -> None:
    client.pcr_extend(7, {TpmAlg.SHA256: hashlib.sha256(b"boot").digest()})
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, ak_template(kind))
    ak = client.load(srk, blob, public)
    selection = PcrSelectionList.parse_text("sha256:0,7")
    message, signature = client.quote(ak, b"fresh nonce", selection)
    attest = QuoteAttest.from_bytes(message)
    assert attest.extra_data == b"fresh nonce"
    values = client.pcr_read(selection)[2]
    assert attest.pcr_digest == hashlib.sha256(b"".join(values)).digest()
    assert attest.qualified_signer == client.read_public(ak)[2]
    assert attest.clock_info.reset_count != tpm.state.reset_count  # obfuscated (owner key)
    verify_digest(public, hashlib.sha256(message).digest(), signature)
    with pytest.raises(SignatureError):
        verify_digest(public, hashlib.sha256(message + b"x").digest(), signature)


def test_quote_scheme_must_match_restricted_key(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, ak_template("ecc"))
    ak = client.load(srk, blob, public)
    with pytest.raises(StatusError) as refused:
        client.quote(ak, b"", PcrSelectionList.of("sha256", [0]),
                     SigScheme(TpmAlg.ECDSA, TpmAlg.SHA384))
    assert refused.value.code == for_parameter(TpmRc.SCHEME, 2)


def test_sign_with_unrestricted_key_only(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, signing_key_template("rsa"))
    key = client.load(srk, blob, public)
    value = hashlib.sha256(b"message").digest()
    signature = client.sign(key, value, SigScheme(TpmAlg.RSAPSS, TpmAlg.SHA256))
    verify_digest(public, value, signature)
    blob, ak_public = client.create(srk, ak_template("ecc"))
    client.flush(key)
    ak = client.load(srk, blob, ak_public)
    with pytest.raises(StatusError) as refused:
        client.sign(ak, value)
    assert refused.value.code == for_parameter(TpmRc.TICKET, 3)
