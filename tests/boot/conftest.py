"""Fixtures of the boot-chain tests: an owner's Secure Boot keys and small synthetic images."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from cvm.crypto.x509_edk2 import Certificate, PrivateKey, der, generate_rsa_key, issue_certificate
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.uefi.guids import EFI_CERT_X509, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE
from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
from cvm.formats.uefi.variable import SECURE_BOOT_ATTRIBUTES, EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.image.signing import sign_pe
from cvm.wire import Guid

OWNER = Guid.parse("0e0f0a0b-1c1d-4e4f-8a8b-9c9d0e0f1a1b")
GRUB_SBAT = b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n" \
            b"grub,5,Free Software Foundation,grub,2.06,https://www.gnu.org/software/grub/\n"


@dataclass(frozen=True)
class OwnerKeys:
    pk: Certificate
    db: Certificate
    db_key: PrivateKey

    def sign(self, image: bytes) -> bytes:
        return sign_pe(image, self.db_key, self.db)


def _esl(certificate: Certificate) -> bytes:
    return SignatureDatabase((SignatureList.of(EFI_CERT_X509, OWNER, der(certificate)),)).to_bytes()


@pytest.fixture(scope="session")
def owner_keys() -> OwnerKeys:
    pk_key, db_key = generate_rsa_key(), generate_rsa_key()
    return OwnerKeys(issue_certificate("cvm test PK", pk_key),
                     issue_certificate("cvm test db", db_key), db_key)


@pytest.fixture(scope="session")
def owner_varstore(owner_keys: OwnerKeys) -> Varstore:
    """A 4 MiB OVMF varstore with the owner's PK, KEK and db enrolled (Secure Boot on)."""
    store = Varstore.empty_4m()
    for name, vendor, cert in (("PK", EFI_GLOBAL_VARIABLE, owner_keys.pk),
                               ("KEK", EFI_GLOBAL_VARIABLE, owner_keys.pk),
                               ("db", EFI_IMAGE_SECURITY_DATABASE, owner_keys.db)):
        store = store.set(EfiVariable(name, vendor, SECURE_BOOT_ATTRIBUTES, _esl(cert)))
    return store


@pytest.fixture(scope="session")
def make_grub() -> Callable[[str, str], bytes]:
    """``make_grub(embedded_config, prefix)``: a GRUB-like core image (``mods`` + ``.sbat``)."""

    def build(config: str, prefix: str) -> bytes:
        modules = b""
        for kind, text in ((2, config), (3, prefix)):
            body = text.encode() + b"\0"
            body += bytes(-len(body) % 8)
            modules += struct.pack("<II", kind, 8 + len(body)) + body
        mods = struct.pack("<IIQQ", 0x676D696D, 0, 24, 24 + len(modules)) + modules
        return build_pe([SectionSpec(".text", b"\xc3" * 64, CODE), SectionSpec("mods", mods),
                         SectionSpec(".sbat", GRUB_SBAT)])

    return build


@pytest.fixture(scope="session")
def make_uki() -> Callable[[bytes, str, bytes], bytes]:
    """``make_uki(kernel, cmdline, initrd)``: a unified kernel image as ukify lays it out."""

    def build(kernel: bytes, cmdline: str, initrd: bytes) -> bytes:
        return build_pe([
            SectionSpec(".text", b"\xc3" * 64, CODE),
            SectionSpec(".osrel", b"ID=cvm\nVERSION_ID=1\n"),
            SectionSpec(".cmdline", cmdline.encode() + b"\0"),
            SectionSpec(".linux", kernel),
            SectionSpec(".initrd", initrd),
        ])

    return build


@pytest.fixture(scope="session")
def small_kernel() -> bytes:
    return build_pe([SectionSpec(".text", b"\x90" * 300 + b"\xc3", CODE),
                     SectionSpec(".data", b"linux")], trailer=b"payload")
