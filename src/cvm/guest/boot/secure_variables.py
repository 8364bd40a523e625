"""Authenticated updates of PK, KEK, db and dbx (EFI_VARIABLE_AUTHENTICATION_2), as edk2 does.

UEFI 2.10 §8.2.2 and §32.3 "Firmware/OS Key Exchange": a time-based authenticated write carries
an EFI_VARIABLE_AUTHENTICATION_2 whose PKCS#7 signs ``name ‖ vendor ‖ attributes ‖ timestamp ‖
data``. edk2 ``SecurityPkg/Library/AuthVariableLib/AuthService.c`` (``VerifyTimeBasedPayload``):
a PK update must be signed by the current PK (unsigned is accepted only in Setup Mode, when no PK
is enrolled), a KEK update by PK, a db/dbx/dbt update by a KEK entry or by PK; the timestamp
must be later than the stored one unless EFI_VARIABLE_APPEND_WRITE is set, in which case the data
is appended and the later of the two timestamps is kept.
"""

from __future__ import annotations

from cvm.crypto.pkcs7 import OID_DATA, parse_any, sign, verify_with_anchor
from cvm.crypto.x509_edk2 import Certificate, PrivateKey, has_rsa_key, load_certificate
from cvm.errors import ChainError, Finding, FormatError, PolicyError, SignatureError, UsageError
from cvm.formats.uefi.efi_time import EfiTime
from cvm.formats.uefi.guids import EFI_CERT_X509, EFI_GLOBAL_VARIABLE, SECURE_BOOT_VARIABLES
from cvm.formats.uefi.signature_list import SignatureDatabase, check_enrolled_lists
from cvm.formats.uefi.variable import (
    EFI_VARIABLE_APPEND_WRITE,
    EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS,
    EfiVariable,
    VariableAuthentication2,
    signed_bytes,
)
from cvm.formats.uefi.varstore import Varstore
from cvm.wire import Guid

# The variables edk2 checks with CheckSignatureListFormat when written in Setup Mode.
SETUP_MODE_CHECKED = ("PK", "KEK", "db", "dbx", "dbt")
AUTHORITIES = {"PK": ("PK",), "KEK": ("PK",), "db": ("KEK", "PK"), "dbx": ("KEK", "PK"),
               "dbt": ("KEK", "PK"), "dbr": ("KEK", "PK")}


def sign_update(
    name: str,
    data: bytes,
    key: PrivateKey,
    certificate: Certificate,
    timestamp: EfiTime,
    attributes: int = 0x27,
    vendor: Guid | None = None,
) -> bytes:
    """A SetVariable payload (EFI_VARIABLE_AUTHENTICATION_2 ‖ data) for a Secure Boot variable."""
    vendor = vendor or SECURE_BOOT_VARIABLES.get(name)
    if vendor is None:
        raise UsageError(f"no vendor GUID known for variable {name!r}; give one")
    message = signed_bytes(name, vendor, attributes, timestamp, data)
    pkcs7 = sign(key, certificate, OID_DATA, message, detached=True)
    return VariableAuthentication2(timestamp, pkcs7).to_bytes() + data


def _authority_certificates(store: Varstore, name: str) -> list[tuple[str, Certificate]]:
    found = []
    for authority in AUTHORITIES[name]:
        variable = store.get(authority, EFI_GLOBAL_VARIABLE)
        if variable is None:
            continue
        for entry in SignatureDatabase.parse(variable.data).certificates():
            found.append((authority, load_certificate(entry.data)))
    return found


def apply_update(
    store: Varstore, name: str, payload: bytes, attributes: int = 0x27,
    vendor: Guid | None = None,
) -> Varstore:
    """The varstore after the authenticated write ``payload`` to ``name``, or an error.

    Raises SignatureError/ChainError when no authorised key signed it, PolicyError when the
    timestamp is not newer, FormatError for a malformed payload.
    """
    vendor = vendor or SECURE_BOOT_VARIABLES.get(name)
    if vendor is None or name not in AUTHORITIES:
        raise UsageError(f"{name!r} is not a Secure Boot variable (PK, KEK, db, dbx, dbt, dbr)")
    if not attributes & EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS:
        raise PolicyError(f"{name}: a Secure Boot variable needs time-based authenticated writes")
    auth, data = VariableAuthentication2.parse(payload)
    database = SignatureDatabase.parse(data)
    current = store.get(name, vendor)
    setup_mode = store.get("PK", EFI_GLOBAL_VARIABLE) is None
    if setup_mode and name in SETUP_MODE_CHECKED:
        check_enrolled_lists(database, name)
        _check_rsa_certificates(database, name)
    message = signed_bytes(name, vendor, attributes, auth.timestamp, data)
    if not (setup_mode and not auth.pkcs7):
        _verify_authority(store, name, auth.pkcs7, message, setup_mode)
    append = bool(attributes & EFI_VARIABLE_APPEND_WRITE)
    stored = attributes & ~EFI_VARIABLE_APPEND_WRITE
    if current is not None and not append and auth.timestamp <= current.timestamp:
        finding = Finding("timestamp", f"later than {current.timestamp}", str(auth.timestamp),
                          "an authenticated update must carry a newer timestamp (replay?)")
        raise PolicyError(f"{name}: update refused: {finding}", (finding,))
    if append and current is not None:
        data = current.data + data
        timestamp = max(current.timestamp, auth.timestamp)
    else:
        timestamp = auth.timestamp
    return store.set(EfiVariable(name, vendor, stored, data, timestamp))


def _check_rsa_certificates(database: SignatureDatabase, name: str) -> None:
    """edk2 ``CheckSignatureListFormat``: the first certificate of each X.509 list (the one it
    reads) must parse and carry an RSA key."""
    for index, item in enumerate(database.lists):
        if item.signature_type != EFI_CERT_X509:
            continue
        where = f"{name}: EFI_SIGNATURE_LIST {index} (EFI_CERT_X509)"
        try:
            certificate = load_certificate(item.signatures[0].data)
        except FormatError as error:
            raise FormatError(f"{where}: {error}") from None
        if not has_rsa_key(certificate):
            raise FormatError(f"{where}: the first certificate has no RSA key")


def _verify_authority(
    store: Varstore, name: str, pkcs7: bytes, message: bytes, setup_mode: bool
) -> None:
    try:
        signed = parse_any(pkcs7)
    except FormatError as error:
        raise SignatureError(f"{name}: the update's PKCS#7 does not parse ({error})") from None
    authorities = _authority_certificates(store, name)
    if not authorities and setup_mode:
        return
    for _, anchor in authorities:
        try:
            verify_with_anchor(signed, message, anchor)
        except ChainError:
            continue
        return
    names = " or ".join(AUTHORITIES[name])
    raise ChainError(f"{name}: the update is not signed by {names}")
