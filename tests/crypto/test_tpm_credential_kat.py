"""Known answers for TPM credential protection, recorded with tpm2-tools' tpm2_makecredential.

The vectors in ``tests/vectors/tpm/credential/`` (see PROVENANCE.md there) are two offline
``tpm2_makecredential -T none`` outputs, one for a fixed RSA-2048 EK and one for a fixed P-256
EK whose private keys are stored beside them. With the private key the test recovers the seed
the tool chose, without cvm's code (RSA-OAEP with the label "IDENTITY\\0" or ECDH and a KDFe
written here), and then requires that:

* cvm's ``activate_credential`` opens the tool's blob and returns the credential;
* cvm's ``make_credential`` / ``make_credential_ecc`` given that seed produce the tool's
  TPM2B_ID_OBJECT byte for byte (AES-CFB and HMAC are deterministic once the seed is fixed);
* a flipped bit in any byte of the blob, another Name, another seed or another hash or key size
  is refused.

The interop test records a fresh exchange with the installed tools and checks it the same way.
"""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from cvm.crypto import tpm_credential
from cvm.crypto.tpm_credential import activate_credential, make_credential, make_credential_ecc
from cvm.errors import IntegrityError
from cvm.formats.tpm2.public import EccPoint, Public, RsaParms

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "tpm" / "credential"
CREDENTIAL = b"cvm known-answer credential"
AK_NAME = b"\x00\x0b" + hashlib.sha256(b"cvm known-answer AK").digest()


def _cred_file(data: bytes) -> tuple[bytes, bytes]:
    """(TPM2B_ID_OBJECT buffer, encrypted secret) of tpm2-tools' credential file."""
    assert data[:8] == bytes.fromhex("badcc0de00000001")
    size = int.from_bytes(data[8:10], "big")
    id_object = data[10 : 10 + size]
    rest = data[10 + size :]
    secret_size = int.from_bytes(rest[:2], "big")
    assert len(rest) == 2 + secret_size
    return id_object, rest[2:]


def _kdfe(z: bytes, label: bytes, party_u: bytes, party_v: bytes) -> bytes:
    """SHA-256 KDFe for 256 bits (one block): H(1 ‖ Z ‖ label ‖ 0 ‖ U ‖ V), written out."""
    return hashlib.sha256(b"\x00\x00\x00\x01" + z + label + b"\x00" + party_u + party_v).digest()


def _kdfa(key: bytes, label: bytes, context: bytes, bits: int) -> bytes:
    """SHA-256 KDFa for at most 256 bits, written out: HMAC(key, 1 ‖ label ‖ 0 ‖ ctx ‖ bits)."""
    block = std_hmac.new(key, b"\x00\x00\x00\x01" + label + b"\x00" + context
                         + bits.to_bytes(4, "big"), "sha256").digest()
    return block[: bits // 8]


def _rsa_seed(secret: bytes) -> bytes:
    key = serialization.load_pem_private_key((VECTORS / "ek-rsa.key.pem").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.decrypt(secret, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(),
                                            b"IDENTITY\x00"))


def _ecc_point(secret: bytes) -> tuple[bytes, bytes]:
    size = int.from_bytes(secret[:2], "big")
    x = secret[2 : 2 + size]
    y_size = int.from_bytes(secret[2 + size : 4 + size], "big")
    y = secret[4 + size :]
    assert len(y) == y_size
    return x, y


def _ecc_seed(secret: bytes) -> bytes:
    key = serialization.load_pem_private_key((VECTORS / "ek-ecc.key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    x, y = _ecc_point(secret)
    peer = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                         ec.SECP256R1()).public_key()
    z = key.exchange(ec.ECDH(), peer)
    ek_x = key.public_key().public_numbers().x.to_bytes(32, "big")
    return _kdfe(z, b"IDENTITY", x, ek_x)


def _recorded(kind: str) -> tuple[bytes, bytes, bytes]:
    """(id_object, secret, seed) of the recorded ``kind`` exchange."""
    id_object, secret = _cred_file((VECTORS / f"{kind}.cred").read_bytes())
    seed = _rsa_seed(secret) if kind == "rsa" else _ecc_seed(secret)
    return id_object, secret, seed


def test_the_recorded_inputs_are_the_documented_ones() -> None:
    assert (VECTORS / "credential.bin").read_bytes() == CREDENTIAL
    for kind in ("rsa", "ecc"):
        public = Public.from_tpm2b((VECTORS / f"ek-{kind}.pub").read_bytes())
        key = serialization.load_pem_private_key(
            (VECTORS / f"ek-{kind}.key.pem").read_bytes(), None)
        if kind == "rsa":
            assert isinstance(key, rsa.RSAPrivateKey) and isinstance(public.unique, bytes)
            assert int.from_bytes(public.unique, "big") == key.public_key().public_numbers().n
        else:
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            assert isinstance(public.unique, EccPoint)
            numbers = key.public_key().public_numbers()
            assert int.from_bytes(public.unique.x, "big") == numbers.x
            assert int.from_bytes(public.unique.y, "big") == numbers.y


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_the_tools_blob_has_the_formula_of_part_1_section_24(kind: str) -> None:
    """Each field of the recorded blob, recomputed here without cvm's KDF or HMAC code."""
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    id_object, _, seed = _recorded(kind)
    assert id_object[:2] == b"\x00\x20"
    integrity, enc_identity = id_object[2:34], id_object[34:]
    hmac_key = _kdfa(seed, b"INTEGRITY", b"", 256)
    assert std_hmac.new(hmac_key, enc_identity + AK_NAME, "sha256").digest() == integrity
    sym_key = _kdfa(seed, b"STORAGE", AK_NAME, 128)
    decryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).decryptor()
    plain = decryptor.update(enc_identity) + decryptor.finalize()
    assert plain == len(CREDENTIAL).to_bytes(2, "big") + CREDENTIAL


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_cvm_opens_the_tools_blob(kind: str) -> None:
    id_object, _, seed = _recorded(kind)
    assert activate_credential(seed, "sha256", 128, AK_NAME, id_object) == CREDENTIAL


def test_cvm_makes_the_tools_blob_for_an_rsa_ek() -> None:
    id_object, secret, seed = _recorded("rsa")
    public = Public.from_tpm2b((VECTORS / "ek-rsa.pub").read_bytes())
    assert isinstance(public.unique, bytes) and isinstance(public.parameters, RsaParms)
    asked: list[int] = []

    def random(size: int) -> bytes:
        asked.append(size)
        return seed

    blob, our_secret = make_credential(public.unique, public.parameters.exponent, "sha256", 128,
                                       AK_NAME, CREDENTIAL, random)
    assert blob == id_object
    assert asked == [32]
    assert len(our_secret) == len(secret) == 256
    assert _rsa_seed(our_secret) == seed


def test_cvm_makes_the_tools_blob_for_an_ecc_ek(monkeypatch: pytest.MonkeyPatch) -> None:
    id_object, secret, seed = _recorded("ecc")
    public = Public.from_tpm2b((VECTORS / "ek-ecc.pub").read_bytes())
    assert isinstance(public.unique, EccPoint)
    ek = (public.unique.x, public.unique.y)
    calls: list[tuple[object, ...]] = []

    def share(curve: str, peer: tuple[bytes, bytes], hash_name: str, label: bytes,
              random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
        calls.append((curve, peer, hash_name, label))
        return seed, secret

    monkeypatch.setattr(tpm_credential, "share_secret_ecc", share)
    assert make_credential_ecc("p256", ek, "sha256", 128, AK_NAME, CREDENTIAL,
                               bytes) == (id_object, secret)
    assert calls == [("p256", ek, "sha256", b"IDENTITY\x00")]


@pytest.mark.parametrize("fill", [0x11, 0xA5])
def test_cvm_ecc_secret_sharing_is_what_the_ek_recovers(fill: int) -> None:
    """cvm's ephemeral point opens to cvm's seed under the EK's private key (ECDH + KDFe)."""
    public = Public.from_tpm2b((VECTORS / "ek-ecc.pub").read_bytes())
    assert isinstance(public.unique, EccPoint)
    blob, point = make_credential_ecc("p256", (public.unique.x, public.unique.y), "sha256",
                                      128, AK_NAME, CREDENTIAL, lambda size: bytes([fill]) * size)
    assert len(point) == 2 + 32 + 2 + 32 and point[:2] == point[34:36] == b"\x00\x20"
    seed = _ecc_seed(point)
    assert activate_credential(seed, "sha256", 128, AK_NAME, blob) == CREDENTIAL


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_every_flipped_byte_of_the_tools_blob_is_refused(kind: str) -> None:
    id_object, _, seed = _recorded(kind)
    for index in range(len(id_object)):
        for bit in (0x01, 0x80):
            changed = bytearray(id_object)
            changed[index] ^= bit
            with pytest.raises(IntegrityError):
                activate_credential(seed, "sha256", 128, AK_NAME, bytes(changed))


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_another_name_seed_or_parameter_is_refused(kind: str) -> None:
    id_object, _, seed = _recorded(kind)
    other_name = AK_NAME[:-1] + bytes([AK_NAME[-1] ^ 1])
    other_seed = bytes([seed[0] ^ 1]) + seed[1:]
    with pytest.raises(IntegrityError, match="HMAC"):
        activate_credential(seed, "sha256", 128, other_name, id_object)
    with pytest.raises(IntegrityError, match="HMAC"):
        activate_credential(other_seed, "sha256", 128, AK_NAME, id_object)
    with pytest.raises(IntegrityError, match="HMAC"):
        activate_credential(seed, "sha384", 128, AK_NAME, id_object)
    with pytest.raises(IntegrityError):
        activate_credential(seed, "sha256", 256, AK_NAME, id_object)
    with pytest.raises(IntegrityError):
        activate_credential(seed, "sha256", 128, AK_NAME, id_object[:-1])
    with pytest.raises(IntegrityError):
        activate_credential(seed, "sha256", 128, AK_NAME, id_object + b"\x00")


@pytest.mark.interop
@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_a_fresh_tools_exchange_opens_with_cvm(kind: str, tmp_path: Path,
                                               require_tool: Callable[[str], str]) -> None:
    """tpm2_makecredential run now (a new seed) for the recorded EK: cvm opens it, and cvm's
    blob for that seed is the tool's, byte for byte."""
    tool = require_tool("tpm2_makecredential")
    done = subprocess.run(
        [tool, "-T", "none", "-u", str(VECTORS / f"ek-{kind}.pub"),
         "-s", str(VECTORS / "credential.bin"), "-n", AK_NAME.hex(),
         "-o", str(tmp_path / "fresh.cred")],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    id_object, secret = _cred_file((tmp_path / "fresh.cred").read_bytes())
    assert (id_object, secret) != _recorded(kind)[:2]
    seed = _rsa_seed(secret) if kind == "rsa" else _ecc_seed(secret)
    assert activate_credential(seed, "sha256", 128, AK_NAME, id_object) == CREDENTIAL
    if kind == "rsa":
        public = Public.from_tpm2b((VECTORS / "ek-rsa.pub").read_bytes())
        assert isinstance(public.unique, bytes)
        blob, _ = make_credential(public.unique, 65537, "sha256", 128, AK_NAME, CREDENTIAL,
                                  lambda size: seed)
        assert blob == id_object
