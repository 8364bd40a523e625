"""SNP guest message header (56860 Table 98) and the REPORT/KEY payloads (Tables 18-23)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.guest_message import (
    HEADER_SIZE,
    GuestMessage,
    MessageHeader,
    MessageType,
)
from cvm.formats.snp.key_request import (
    GuestFieldSelect,
    KeyRequest,
    KeyResponse,
    RootKey,
)
from cvm.formats.snp.report_request import (
    REPORT_SIZE,
    KeySelect,
    ReportRequest,
    ReportResponse,
)

u32 = st.integers(0, (1 << 32) - 1)
u64 = st.integers(0, (1 << 64) - 1)
headers = st.builds(
    MessageHeader,
    msg_seqno=u64,
    msg_type=st.sampled_from(MessageType),
    msg_sz=st.integers(0, 4000),
    msg_vmpck=st.integers(0, 3),
    msg_version=st.integers(0, 255),
    authtag=st.binary(min_size=16, max_size=16),
)


@given(headers)
def test_header_round_trip(header: MessageHeader) -> None:
    data = header.to_bytes()
    assert len(data) == HEADER_SIZE
    assert MessageHeader.from_bytes(data) == header
    assert header.aad() == data[0x30:]
    assert header.iv() == header.msg_seqno.to_bytes(8, "little") + bytes(4)


@given(headers, st.data())
def test_page_round_trip(header: MessageHeader, data: st.DataObject) -> None:
    payload = data.draw(st.binary(min_size=header.msg_sz, max_size=header.msg_sz))
    message = GuestMessage(header, payload)
    assert GuestMessage.from_page(message.to_page()) == message


def test_header_offsets() -> None:
    header = MessageHeader(7, MessageType.REPORT_REQ, 0x60, 2, authtag=b"\xaa" * 16)
    data = header.to_bytes()
    assert data[:16] == b"\xaa" * 16 and data[16:32] == bytes(16)
    assert int.from_bytes(data[0x20:0x28], "little") == 7
    assert data[0x30:0x38] == bytes([1, 1, 0x60, 0, 5, 1, 0x60, 0])
    assert data[0x3C] == 2


@pytest.mark.parametrize(
    ("offset", "value"),
    [(0x10, 1), (0x28, 1), (0x31, 2), (0x32, 0x61), (0x34, 0), (0x3C, 4), (0x3D, 1)],
)
def test_header_strict(offset: int, value: int) -> None:
    data = bytearray(MessageHeader(1, MessageType.KEY_REQ, 0x20, 0).to_bytes())
    data[offset] = value
    with pytest.raises(FormatError):
        MessageHeader.from_bytes(bytes(data))


def test_response_type() -> None:
    assert MessageType.REPORT_REQ.response is MessageType.REPORT_RSP
    with pytest.raises(UsageError):
        _ = MessageType.KEY_RSP.response


@given(st.binary(min_size=64, max_size=64), st.integers(0, 3), st.sampled_from(KeySelect))
def test_report_request_round_trip(data: bytes, vmpl: int, key_sel: KeySelect) -> None:
    request = ReportRequest(data, vmpl, key_sel)
    raw = request.to_bytes()
    assert len(raw) == 0x60 and raw[:64] == data
    assert ReportRequest.from_bytes(raw) == request


def test_report_request_strict() -> None:
    raw = bytearray(ReportRequest(bytes(64)).to_bytes())
    raw[0x44] = 3
    with pytest.raises(FormatError):
        ReportRequest.from_bytes(bytes(raw))
    raw[0x44] = 0
    raw[0x50] = 1
    with pytest.raises(FormatError):
        ReportRequest.from_bytes(bytes(raw))


@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_report_response_round_trip(report: bytes) -> None:
    response = ReportResponse(0, report)
    assert ReportResponse.from_bytes(response.to_bytes()) == response
    failed = ReportResponse(0x16)
    assert ReportResponse.from_bytes(failed.to_bytes()) == failed


key_requests = st.builds(
    KeyRequest,
    guest_field_select=st.integers(0, 0x3F).map(GuestFieldSelect),
    root_key_select=st.sampled_from(RootKey),
    vmpl=u32,
    guest_svn=u32,
    tcb_version=u64,
    launch_mit_vector=st.one_of(st.none(), u64),
)


@given(key_requests)
def test_key_request_round_trip(request: KeyRequest) -> None:
    raw = request.to_bytes()
    assert len(raw) == (0x20 if request.launch_mit_vector is None else 0x28)
    assert KeyRequest.from_bytes(raw) == request


def test_key_request_strict() -> None:
    raw = bytearray(KeyRequest(GuestFieldSelect.MEASUREMENT).to_bytes())
    assert raw[8] == 0x08
    raw[8] = 0x80
    with pytest.raises(FormatError):
        KeyRequest.from_bytes(bytes(raw))
    raw[8] = 0x40  # LAUNCH_MIT_VECTOR needs a version 2 request
    with pytest.raises(FormatError):
        KeyRequest.from_bytes(bytes(raw))
    with pytest.raises(FormatError):
        KeyRequest.from_bytes(bytes(0x21))


@given(st.binary(min_size=32, max_size=32))
def test_key_response_round_trip(key: bytes) -> None:
    response = KeyResponse(0, key)
    raw = response.to_bytes()
    assert raw[0x20:] == key
    assert KeyResponse.from_bytes(raw) == response
