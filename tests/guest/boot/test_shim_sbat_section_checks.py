"""shim's choice of the ``.sbat`` section, as it reaches a decision: an image signed by a
trusted key with two ``.sbat`` sections is refused (shim's ``verify_buffer_sbat`` answers
EFI_UNSUPPORTED), even through the shim_lock protocol, whichever section would pass."""

from __future__ import annotations

import pytest

from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.sbat import SbatLevel
from cvm.formats.uefi.guids import EFI_CERT_X509, SHIM_LOCK_GUID
from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
from cvm.guest.boot.secureboot import Decision
from cvm.guest.boot.shim_policy import ShimState, verify_next_stage
from cvm.image.signing import sign_pe
from cvm.wire import Guid

SELF = b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"
CURRENT = SELF + b"grub,4,Free Software Foundation,grub,2.12,https://www.gnu.org/software/grub/\n"
REVOKED = SELF + b"grub,2,Free Software Foundation,grub,2.06,https://www.gnu.org/software/grub/\n"
OWNER = Guid.parse("22222222-3333-4444-5555-666666666666")
LEVEL = SbatLevel.parse(b"sbat,1,2024010100\ngrub,3\n")


@pytest.mark.parametrize("order", [(CURRENT, REVOKED), (REVOKED, CURRENT)])
@pytest.mark.parametrize("in_protocol", [False, True])
def test_two_sbat_sections_are_refused(order: tuple[bytes, bytes], in_protocol: bool) -> None:
    key = generate_rsa_key()
    signer = issue_certificate("Two SBAT Signer", key)
    sections = [SectionSpec(".text", b"\xc3" * 64, CODE)]
    sections += [SectionSpec(".sbat", sbat) for sbat in order]
    image = sign_pe(build_pe(sections), key, signer)
    db = SignatureDatabase((SignatureList.of(EFI_CERT_X509, OWNER, der(signer)),))
    state = ShimState(db, SignatureDatabase(), sbat_level=LEVEL)
    assert verify_next_stage(image, state, "grubx64.efi", in_protocol=in_protocol) == Decision(
        "grubx64.efi", False,
        "unparsable .sbat section (PE image: 2 .sbat sections (shim loads none))", "SbatLevel",
        image_digest(image, "sha256"), variable_vendor=SHIM_LOCK_GUID)
    # One of them alone decides by its generation.
    alone = sign_pe(build_pe([sections[0], SectionSpec(".sbat", CURRENT)]), key, signer)
    assert verify_next_stage(alone, state, "grubx64.efi", in_protocol=in_protocol).allowed
