"""The owner's keys: Secure Boot (PK, KEK, db), shim's vendor key, the PCR-policy signing key
and the provisioning key — generated, or loaded from an ``owner/`` folder.

UEFI 2.10 §32.3 (Secure Boot keys) as edk2 enrolls them: each of PK, KEK and db holds one
EFI_SIGNATURE_LIST of type EFI_CERT_X509 with the owner's GUID; dbx holds EFI_CERT_SHA256 entries
(the Authenticode hashes the owner revokes), or is absent. Keys are RSA-2048 with self-signed
X.509 certificates (KEK and db issued by PK would change nothing the firmware checks: it
matches db entries by certificate, edk2 ``DxeImageVerificationLib``). The vendor key signs what
shim's ``.vendor_cert`` authorises (GRUB, the kernel); the PCR-policy key signs PCR 11 policies
of a UKI (systemd-measure); the provisioning key (AES-256) wraps the vTPM state key.

Generated keys come from the operating system, or — for a seeded build (``cvm image build
--seed``) — from 32 bytes drawn from the build's seeded random (the keys' seed): each RSA key
derived from it under its name (:func:`cvm.crypto.rsa_pss.derive_private_key`: seeded primes,
FIPS 186-5 B.3), each certificate's serial from SHAKE-256 of it under ``serial/`` and the name,
and ``notBefore`` the build's time (:mod:`cvm.image.build_epoch`). A key does not depend on
which other keys are made (a given db, no vendor key, no PCR-policy key). Every signature made
with these keys is RSA PKCS#1 v1.5 (certificates, Authenticode, ``.pcrsig``), which has no
randomness: the same seed gives the same bytes. A seeded key is derivable from the seed, a
small integer: for tests and demos only.

All private material is written under ``owner/`` only, which never goes to the host.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cvm.crypto.drbg import SeededRandom
from cvm.crypto.rsa_pss import derive_private_key
from cvm.crypto.tpm_keys import public_key_pem
from cvm.crypto.x509_edk2 import (
    Certificate,
    PrivateKey,
    der,
    generate_rsa_key,
    issue_certificate,
    load_certificate,
    load_private_key,
    pem,
    private_key_pem,
    rsa_public_numbers,
)
from cvm.errors import FormatError, UsageError
from cvm.files import PUBLIC_MODE, SECRET_MODE, write_atomically
from cvm.formats.uefi.guids import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
)
from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
from cvm.formats.uefi.variable import SECURE_BOOT_ATTRIBUTES, EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.image.signing import sign_pe
from cvm.wire import Guid

T = TypeVar("T")

OWNER_GUID = Guid.parse("7c0a4d2e-31b5-4f8e-9a6c-2d1e0f3b5a47")
PROVISIONING_KEY_SIZE = 32
RSA_KEY_BITS = 2048
KEY_SEED_SIZE = 32
"""Bytes of the build's random the seeded keys are derived from."""
SERIAL_SIZE = 20
"""Bytes behind a seeded certificate's serial (RFC 5280 4.1.2.2: at most 20 octets)."""
PCR_POLICY_LABEL = "cvm owner PCR policy"
OWNER_FOLDER_MODE = 0o700
README = """This folder holds the owner's secrets: Secure Boot private keys, the PCR-policy signing
key, the provisioning key that wraps the vTPM state key, and the LUKS recovery passphrase.
It never goes to the host. `cvm vm run` refuses to read it.
"""
Random = Callable[[int], bytes]


@dataclass(frozen=True)
class KeyPair:
    """A private key and its certificate."""

    key: PrivateKey
    certificate: Certificate

    @classmethod
    def generate(cls, common_name: str) -> KeyPair:
        return new_key_pair(common_name, None, None)


def new_rsa_key(label: str, seed: bytes | None) -> PrivateKey:
    """An RSA-2048 key: fresh from the operating system when ``seed`` is ``None``, else
    derived from ``seed`` and ``label``."""
    if seed is None:
        return generate_rsa_key(RSA_KEY_BITS)
    return derive_private_key(seed, label, RSA_KEY_BITS)


def certificate_serial(seed: bytes, label: str) -> int:
    """The serial of the certificate named ``label`` under the keys' ``seed``: 158 bits of
    SHAKE-256 under a fixed top bit, so it is positive, never zero and exactly 20 octets."""
    drawn = SeededRandom(seed, b"serial/" + label.encode())(SERIAL_SIZE)
    return (int.from_bytes(drawn, "big") >> 2) | (1 << 158)


def new_key_pair(common_name: str, seed: bytes | None,
                 not_before: datetime.datetime | None) -> KeyPair:
    """A key and its self-signed certificate named ``common_name``; the keys' ``seed`` gives
    the key and the serial, ``None`` the system's; ``not_before`` ``None``: the usual start."""
    key = new_rsa_key(common_name, seed)
    serial = None if seed is None else certificate_serial(seed, common_name)
    return KeyPair(key, issue_certificate(common_name, key, serial=serial,
                                          not_before=not_before))


@dataclass(frozen=True)
class OwnerKeys:
    """Every key the owner signs, seals or wraps with."""

    pk: KeyPair
    kek: KeyPair
    db: KeyPair
    vendor: KeyPair | None
    pcr_policy: PrivateKey | None
    provisioning: bytes

    @classmethod
    def generate(cls, random: Random, vendor: bool = True, pcr_policy: bool = True,
                 db: KeyPair | None = None, seeded: bool = False,
                 not_before: datetime.datetime | None = None) -> OwnerKeys:
        """New RSA-2048 keys (``db`` given keeps the owner's signing key); see
        :func:`generate_owner_keys`."""
        return generate_owner_keys(random, vendor, pcr_policy, db, seeded, not_before)

    def sign_db(self, image: bytes) -> bytes:
        """``image`` signed with the db key (what the firmware verifies)."""
        return sign_pe(image, self.db.key, self.db.certificate)

    def sign_vendor(self, image: bytes) -> bytes:
        """``image`` signed with shim's vendor key."""
        if self.vendor is None:
            raise UsageError("these owner keys have no shim vendor key")
        return sign_pe(image, self.vendor.key, self.vendor.certificate)

    def pcr_policy_public_pem(self) -> bytes:
        if self.pcr_policy is None:
            raise UsageError("these owner keys have no PCR-policy signing key")
        numbers = rsa_public_numbers(self.pcr_policy)
        if numbers is None:
            raise UsageError("the PCR-policy signing key must be an RSA key")
        modulus, exponent = numbers
        return public_key_pem("rsa", modulus.to_bytes((modulus.bit_length() + 7) // 8, "big"),
                              exponent)

    def varstore(self, dbx_sha256: Sequence[bytes] = ()) -> Varstore:
        """An OVMF varstore with PK, KEK, db enrolled (Secure Boot on) and dbx if given."""
        store = Varstore.empty_4m()
        for name, vendor, pair in (("PK", EFI_GLOBAL_VARIABLE, self.pk),
                                   ("KEK", EFI_GLOBAL_VARIABLE, self.kek),
                                   ("db", EFI_IMAGE_SECURITY_DATABASE, self.db)):
            esl = SignatureList.of(EFI_CERT_X509, OWNER_GUID, der(pair.certificate))
            data = SignatureDatabase((esl,)).to_bytes()
            store = store.set(EfiVariable(name, vendor, SECURE_BOOT_ATTRIBUTES, data))
        if dbx_sha256:
            if any(len(d) != 32 for d in dbx_sha256):
                raise UsageError("dbx entries are SHA-256 Authenticode digests (32 bytes)")
            esl = SignatureList.of(EFI_CERT_SHA256, OWNER_GUID, *dbx_sha256)
            store = store.set(EfiVariable("dbx", EFI_IMAGE_SECURITY_DATABASE,
                                          SECURE_BOOT_ATTRIBUTES,
                                          SignatureDatabase((esl,)).to_bytes()))
        return store

    def save(self, folder: Path) -> None:
        """Write every key under ``folder`` (the bundle's ``owner/``): the folder 0700, each
        private file created 0600 (never readable by others, not even for a moment)."""
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(OWNER_FOLDER_MODE)
        files: dict[str, bytes] = {"README": README.encode()}
        for name, pair in (("pk", self.pk), ("kek", self.kek), ("db", self.db),
                           ("vendor", self.vendor)):
            if pair is not None:
                files[f"{name}.key"] = private_key_pem(pair.key)
                files[f"{name}.crt"] = pem(pair.certificate)
        if self.pcr_policy is not None:
            files["pcr-policy.key"] = private_key_pem(self.pcr_policy)
            files["pcr-policy.pem"] = self.pcr_policy_public_pem()
        files["provisioning.key"] = self.provisioning
        for name, data in files.items():
            write_atomically(folder / name, data, SECRET_MODE if name.endswith(".key")
                             else PUBLIC_MODE)

    @classmethod
    def load(cls, folder: Path) -> OwnerKeys:
        """The keys :meth:`save` wrote; FormatError naming the file that is wrong."""
        def pair(name: str, required: bool = True) -> KeyPair | None:
            key_path, cert_path = folder / f"{name}.key", folder / f"{name}.crt"
            if not key_path.exists() and not required:
                return None
            return KeyPair(_parsed(key_path, load_private_key),
                           _parsed(cert_path, load_certificate))
        pk, kek, db = pair("pk"), pair("kek"), pair("db")
        assert pk is not None and kek is not None and db is not None
        policy_path = folder / "pcr-policy.key"
        policy = _parsed(policy_path, load_private_key) if policy_path.exists() else None
        try:
            provisioning = (folder / "provisioning.key").read_bytes()
        except OSError:
            raise UsageError(f"owner keys: cannot read {folder / 'provisioning.key'}") from None
        if len(provisioning) != PROVISIONING_KEY_SIZE:
            raise FormatError(f"{folder / 'provisioning.key'}: {len(provisioning)} bytes, "
                              f"expected {PROVISIONING_KEY_SIZE}")
        return cls(pk, kek, db, pair("vendor", required=False), policy, provisioning)


def _parsed(path: Path, parse: Callable[[bytes], T]) -> T:
    """One file of the owner's keys, parsed: a file that cannot be read is a usage error (the
    folder is not the owner's keys), one that does not parse is named with what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UsageError(f"owner keys: cannot read {error.filename}") from None
    try:
        return parse(data)
    except FormatError as error:
        raise FormatError(f"{path}: {error}") from None


def generate_owner_keys(random: Random, vendor: bool, pcr_policy: bool, db: KeyPair | None,
                        seeded: bool, not_before: datetime.datetime | None) -> OwnerKeys:
    """The provisioning key (the first draw from ``random``), then PK, KEK, db (unless given),
    the vendor key and the PCR-policy key: derived from a second draw (the keys' seed) when
    ``seeded``, else fresh from the operating system. Certificates start at ``not_before``
    (``None``: :func:`cvm.crypto.x509_edk2.issue_certificate`'s usual start)."""
    provisioning = random(PROVISIONING_KEY_SIZE)
    seed = random(KEY_SEED_SIZE) if seeded else None
    pk = new_key_pair("cvm owner PK", seed, not_before)
    kek = new_key_pair("cvm owner KEK", seed, not_before)
    signer = db or new_key_pair("cvm owner db", seed, not_before)
    vendor_pair = new_key_pair("cvm owner shim vendor", seed, not_before) if vendor else None
    policy = new_rsa_key(PCR_POLICY_LABEL, seed) if pcr_policy else None
    return OwnerKeys(pk, kek, signer, vendor_pair, policy, provisioning)
