"""shim's rules for the next stage: SBAT, deny lists, then db, MokList and the vendor certificate.

rhboot/shim 16.1: ``shim.c::verify_buffer`` checks SBAT first (``verify_buffer_sbat``), then
``verify.c::check_denylist`` (vendor_dbx, dbx, MokListX: SHA-256/SHA-1 image hashes and X.509
certificates that verify the signature) and ``check_allowlist`` (db hash, db certificate,
vendor_db, MokListRT hash, MokListRT certificate), and at last the built-in vendor certificate.
At start-up shim mirrors MokList plus its vendor certificate (owner SHIM_LOCK_GUID) into
MokListRT and MokListX plus vendor_dbx into MokListXRT (``mok.c``), which is why a GRUB signed by
the Debian CA is authorised by the MokListRT entry that holds the vendor certificate.
SBAT (``SBAT.md``, ``sbat.c::verify_single_entry``): an image is revoked when, for a component of
SbatLevel, the image's generation of that component is lower; images verified through the
shim_lock protocol (GRUB verifying the kernel) may lack a ``.sbat`` section.

Certificate hashes: shim 16.1 itself matches only image hashes and whole X.509 entries of its
deny lists. cvm's shim is stricter, as the firmware is: it also applies edk2's certificate-hash
rules (:func:`cvm.guest.boot.secureboot.forbidden_by`) to each deny list, and refuses a signature
whose allowing certificate (db, MokListRT or the vendor certificate) has its TBS hash in
vendor_dbx, dbx or MokListXRT, so that a revoked CA cannot be reached by leaving it out of the
signature.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.crypto.x509_edk2 import der, load_certificate
from cvm.errors import FormatError
from cvm.formats.pe.authenticode import digest_of
from cvm.formats.pe.image import PeImage
from cvm.formats.pe.sbat import SbatLevel, SbatLevelSection, SbatSection
from cvm.formats.pe.vendor_cert import VendorCertSection
from cvm.formats.uefi.guids import (
    EFI_CERT_X509,
    EFI_IMAGE_SECURITY_DATABASE,
    SHIM_LOCK_GUID,
)
from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
from cvm.guest.boot.secureboot import (
    HASH_SIGNATURE_TYPES,
    Decision,
    allowed_by,
    find_hash,
    forbidden_by,
    signatures_of,
)
from cvm.wire import Guid

SHIM_HASHES = ("sha256", "sha1")
EMPTY = SignatureDatabase()


def sbat_revocations(section: SbatSection, level: SbatLevel) -> list[tuple[str, int, int]]:
    """(component, image generation, minimum generation) for each revoked component."""
    found = []
    for component, minimum in level.minimums:
        for entry in section.entries:
            if entry.component_name == component and entry.component_generation < minimum:
                found.append((component, entry.component_generation, minimum))
    return found


@dataclass(frozen=True)
class ShimState:
    """What shim decides with: firmware db/dbx, its vendor cert and deny list, MOK, SbatLevel."""

    db: SignatureDatabase
    dbx: SignatureDatabase
    vendor_cert: bytes | None = None
    vendor_dbx: SignatureDatabase = EMPTY
    mok_list: SignatureDatabase = EMPTY
    mok_list_x: SignatureDatabase = EMPTY
    sbat_level: SbatLevel | None = None

    @classmethod
    def from_shim(
        cls,
        shim: bytes | PeImage,
        db: SignatureDatabase,
        dbx: SignatureDatabase,
        mok_list: SignatureDatabase = EMPTY,
        sbat_level: SbatLevel | None = None,
    ) -> ShimState:
        """The state of a given shim binary: its ``.vendor_cert`` and its built-in SbatLevel.

        Without an explicit ``sbat_level`` shim applies the ``previous`` payload of its
        ``.sbatlevel`` section (shim 16's default policy).
        """
        image = shim if isinstance(shim, PeImage) else PeImage.parse(shim)
        vendor_cert: bytes | None = None
        vendor_dbx = EMPTY
        section = image.section(".vendor_cert")
        if section is not None:
            parsed = VendorCertSection.parse(section.loaded_data)
            vendor_cert = parsed.authorized or None
            vendor_dbx = SignatureDatabase.parse(parsed.deauthorized)
        if sbat_level is None:
            levels = image.section(".sbatlevel")
            if levels is not None:
                sbat_level = SbatLevelSection.parse(levels.loaded_data).previous
        return cls(db, dbx, vendor_cert, vendor_dbx, mok_list, EMPTY, sbat_level)

    @property
    def mok_list_rt(self) -> SignatureDatabase:
        """MokListRT as shim mirrors it: MokList then the vendor certificate (SHIM_LOCK owner)."""
        return mok_list_rt(self.mok_list, self.vendor_cert)

    @property
    def mok_list_x_rt(self) -> SignatureDatabase:
        """MokListXRT as shim mirrors it: MokListX then vendor_dbx."""
        return mok_list_x_rt(self.mok_list_x, self.vendor_dbx)


def mok_list_rt(mok_list: SignatureDatabase, vendor_cert: bytes | None) -> SignatureDatabase:
    """MokListRT from MokList and shim's vendor certificate, if it has one (a plain function,
    so that mutation testing reaches it)."""
    if not vendor_cert:
        return mok_list
    vendor = SignatureList.of(EFI_CERT_X509, SHIM_LOCK_GUID, der(load_certificate(vendor_cert)))
    return mok_list + SignatureDatabase((vendor,))


def mok_list_x_rt(mok_list_x: SignatureDatabase, vendor_dbx: SignatureDatabase
                  ) -> SignatureDatabase:
    """MokListXRT from MokListX and shim's vendor_dbx: MokListX first (a plain function, so that
    mutation testing reaches it)."""
    return mok_list_x + vendor_dbx


def _hash_listed(name: str, allowed: bool, database: str, entries: SignatureDatabase,
                 vendor: Guid, digests: dict[str, bytes]) -> Decision | None:
    """The decision ``allowed`` when one of the image's ``digests`` (SHA-256 first) is listed in
    ``database``; None when none is."""
    for alg in SHIM_HASHES:
        listed = find_hash(entries, alg, digests[alg])
        if listed is not None:
            return Decision(name, allowed, f"the image's {alg} hash is in {database}", database,
                            digests["sha256"], listed, HASH_SIGNATURE_TYPES[alg], None, (),
                            vendor)
    return None


def verify_next_stage(
    pe_bytes: bytes | PeImage, state: ShimState, name: str = "image", in_protocol: bool = False
) -> Decision:
    """shim's decision on an image it loads (or, ``in_protocol``, that GRUB asks it to verify)."""
    image = pe_bytes if isinstance(pe_bytes, PeImage) else PeImage.parse(pe_bytes)
    sha256 = digest_of(image, "sha256", "shim")
    refused = _check_sbat(image, state, name, sha256, in_protocol)
    if refused is not None:
        return refused
    digests = {alg: digest_of(image, alg, "shim") for alg in SHIM_HASHES}
    signatures = [s for s in signatures_of(image) if s.digest == digests.get(
        s.signature.digest_algorithm, s.digest)]
    deny = (("vendor_dbx", state.vendor_dbx, SHIM_LOCK_GUID),
            ("dbx", state.dbx, EFI_IMAGE_SECURITY_DATABASE),
            ("MokListX", state.mok_list_x_rt, SHIM_LOCK_GUID))
    for database, entries, vendor in deny:
        listed = _hash_listed(name, False, database, entries, vendor, digests)
        if listed is not None:
            return listed
        for item in signatures:
            forbidden = forbidden_by(item.signature, item.digest, entries)
            if forbidden is not None:
                return Decision(name, False, forbidden.reason.replace("dbx", database),
                                database, sha256, forbidden.entry, forbidden.signature_type,
                                item.index, (), vendor)
    revoked = state.vendor_dbx + state.dbx + state.mok_list_x_rt
    allow = (("db", state.db, EFI_IMAGE_SECURITY_DATABASE),
             ("MokListRT", state.mok_list_rt, SHIM_LOCK_GUID))
    for database, entries, vendor in allow:
        listed = _hash_listed(name, True, database, entries, vendor, digests)
        if listed is not None:
            return listed
        for item in signatures:
            found = allowed_by(item.signature, item.digest, entries, revoked)
            if found is not None and found.revoked is not None:
                holder, holder_vendor = next(
                    (n, v) for n, e, v in deny if found.revoked.entry in e.of_type(
                        found.revoked.signature_type or EFI_CERT_X509))
                return Decision(name, False,
                                found.revoked.reason.replace("dbx", holder).replace(
                                    "db ", f"{database} ", 1),
                                holder, sha256, found.revoked.entry,
                                found.revoked.signature_type, item.index, (), holder_vendor)
            if found is not None:
                return Decision(
                    name, True, f"a signature chains to a certificate in {database}", database,
                    sha256, found.entry, EFI_CERT_X509, item.index,
                    tuple(der(c) for c in found.chain), vendor,
                )
    return Decision(name, False, "no matching signer in db, MokListRT or the vendor certificate",
                    "db, MokListRT", sha256, None, None, None, (), SHIM_LOCK_GUID)


def _check_sbat(image: PeImage, state: ShimState, name: str, sha256: bytes,
                in_protocol: bool) -> Decision | None:
    level = state.sbat_level
    if level is None or not level.minimums:
        return None
    try:
        raw = image.sbat
        if not raw:
            if in_protocol:
                return None
            return Decision(name, False, "no .sbat section (mandatory for images shim loads)",
                            "SbatLevel", sha256, variable_vendor=SHIM_LOCK_GUID)
        section = SbatSection.parse(raw)
    except FormatError as error:
        return Decision(name, False, f"unparsable .sbat section ({error})", "SbatLevel", sha256,
                        variable_vendor=SHIM_LOCK_GUID)
    revoked = sbat_revocations(section, level)
    if revoked:
        component, generation, minimum = revoked[0]
        return Decision(
            name, False,
            f"revoked SBAT component {component}: generation {generation} < {minimum} "
            f"(SbatLevel {level.datestamp})", "SbatLevel", sha256, variable_vendor=SHIM_LOCK_GUID,
        )
    return None
