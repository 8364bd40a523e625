"""Mutated launch-format bytes parse again exactly, or raise FormatError — nothing else.

Each parser gets a valid encoding with random bytes overwritten (the style of mutation a
hostile host can apply to anything it hands over).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType, SevMetadata
from cvm.formats.snp.cpuid_page import CpuidFunction, CpuidPage
from cvm.formats.snp.guest_message import GuestMessage, MessageHeader, MessageType
from cvm.formats.snp.id_auth import IdAuthInfo, SnpPublicKey, SnpSignature
from cvm.formats.snp.id_block import IdBlock
from cvm.formats.snp.key_request import GuestFieldSelect, KeyRequest, KeyResponse
from cvm.formats.snp.report_request import ReportRequest, ReportResponse
from cvm.formats.snp.secrets_page import SecretsPage
from cvm.formats.snp.sev_hashes import SevHashTable

Parser = Callable[[bytes], object]
CASES: list[tuple[str, bytes, Parser]] = [
    ("id_block", IdBlock(b"\x11" * 48).to_bytes(), IdBlock.from_bytes),
    (
        "id_auth",
        IdAuthInfo(
            SnpSignature(1, 2), SnpPublicKey(3, 4), SnpSignature(5, 6), SnpPublicKey(7, 8)
        ).to_bytes(),
        IdAuthInfo.from_bytes,
    ),
    ("sev_hashes", SevHashTable.for_boot(b"k").to_bytes(), SevHashTable.from_bytes),
    (
        "guest_message",
        GuestMessage(MessageHeader(3, MessageType.REPORT_REQ, 4, 1), b"abcd").to_page(),
        GuestMessage.from_page,
    ),
    ("report_request", ReportRequest(b"\x01" * 64, 1).to_bytes(), ReportRequest.from_bytes),
    ("report_response", ReportResponse(0, b"\x02" * 0x4A0).to_bytes(), ReportResponse.from_bytes),
    ("key_request", KeyRequest(GuestFieldSelect.MEASUREMENT).to_bytes(), KeyRequest.from_bytes),
    ("key_response", KeyResponse(0, b"\x03" * 32).to_bytes(), KeyResponse.from_bytes),
    ("secrets_page", SecretsPage((b"\x04" * 32,) * 4).to_bytes(), SecretsPage.from_bytes),
    ("cpuid_page", CpuidPage((CpuidFunction(1, eax=5),)).to_bytes(), CpuidPage.from_bytes),
    (
        "sev_metadata",
        SevMetadata((MetadataSection(0x800000, 0x1000, SectionType.CPUID),)).to_bytes(),
        SevMetadata.from_bytes,
    ),
]


@pytest.mark.parametrize(("name", "valid", "parse"), CASES, ids=[c[0] for c in CASES])
@given(st.data())
def test_mutations_parse_or_raise_format_error(
    name: str, valid: bytes, parse: Parser, data: st.DataObject
) -> None:
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), max_size=6)
    )
    mutated = bytearray(valid)
    for offset, value in edits:
        mutated[offset] = value
    try:
        parsed = parse(bytes(mutated))
    except FormatError:
        return
    method = "to_page" if name == "guest_message" else "to_bytes"
    assert parse(getattr(parsed, method)()) == parsed
