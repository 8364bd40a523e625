"""The guest-message header, MSG_REPORT_REQ/RSP and MSG_KEY_REQ/RSP: each refusal, pinned.

The PSP parses what the guest sends and the guest parses what the PSP answers, through pages
the host can rewrite: every size, version, type, key index and reserved bit is refused here
before any key is used, with a message naming the field.
"""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.guest_message import (
    HEADER_SIZE,
    MAX_PAYLOAD_SIZE,
    PAGE_SIZE,
    GuestMessage,
    MessageHeader,
    MessageType,
    response_type,
)
from cvm.formats.snp.key_request import (
    GuestFieldSelect,
    KeyRequest,
    KeyResponse,
    RootKey,
    key_request_version,
)
from cvm.formats.snp.report_request import (
    REPORT_SIZE,
    KeySelect,
    ReportRequest,
    ReportResponse,
)

# -- MSG_TYPE ------------------------------------------------------------------------------------


def test_each_request_is_answered_by_the_next_type() -> None:
    for kind in MessageType:
        if kind.value % 2:
            assert response_type(kind) is MessageType(kind.value + 1)
            assert kind.response is MessageType(kind.value + 1)
        else:
            with pytest.raises(UsageError) as caught:
                response_type(kind)
            assert str(caught.value) == f"{kind.name} is already a response"
    assert response_type(MessageType.TSC_INFO_REQ) is MessageType.TSC_INFO_RSP


# -- the header's constructor --------------------------------------------------------------------


def _header(**changes: object) -> MessageHeader:
    fields: dict[str, object] = {
        "msg_seqno": 1, "msg_type": MessageType.REPORT_REQ, "msg_sz": 0x60, "msg_vmpck": 0,
    }
    fields.update(changes)
    return MessageHeader(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"msg_seqno": 1 << 64}, "MSG_SEQNO is a u64"),
        ({"msg_seqno": -1}, "MSG_SEQNO is a u64"),
        ({"msg_sz": MAX_PAYLOAD_SIZE + 1}, "MSG_SZ 4001 exceeds 4000"),
        ({"msg_sz": -1}, "MSG_SZ -1 exceeds 4000"),
        ({"msg_vmpck": 4}, "MSG_VMPCK 4 is not 0..3"),
        ({"msg_vmpck": -1}, "MSG_VMPCK -1 is not 0..3"),
        ({"authtag": bytes(15)}, "AUTHTAG is a 16-byte GCM tag"),
        ({"authtag": bytes(17)}, "AUTHTAG is a 16-byte GCM tag"),
        ({"msg_version": 256}, "MSG_VERSION and ALGO are u8 values"),
        ({"msg_version": -1}, "MSG_VERSION and ALGO are u8 values"),
        ({"algo": 256}, "MSG_VERSION and ALGO are u8 values"),
        ({"algo": -1}, "MSG_VERSION and ALGO are u8 values"),
    ],
)
def test_the_header_constructor_refuses_each_field_out_of_range(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        _header(**changes)
    assert str(caught.value) == message


def test_the_header_constructor_takes_each_largest_value() -> None:
    header = _header(
        msg_seqno=(1 << 64) - 1, msg_sz=MAX_PAYLOAD_SIZE, msg_vmpck=3, msg_version=255, algo=1
    )
    assert MessageHeader.from_bytes(header.to_bytes()) == header
    assert _header(msg_seqno=0, msg_sz=0, msg_version=0).msg_sz == 0


# -- the header's bytes --------------------------------------------------------------------------


def test_the_header_bytes_are_table_98() -> None:
    header = _header(
        msg_seqno=0x0102030405060708, msg_type=MessageType.KEY_RSP, msg_sz=0x123,
        msg_vmpck=3, msg_version=2, authtag=bytes(range(16)),
    )
    data = header.to_bytes()
    assert len(data) == HEADER_SIZE
    assert data[:16] == bytes(range(16)) and data[16:0x20] == bytes(16)
    assert data[0x20:0x28] == (0x0102030405060708).to_bytes(8, "little")
    assert data[0x30:0x38] == bytes([1, 1, 0x60, 0, 4, 2, 0x23, 0x01])
    assert data[0x3C] == 3 and not any(data[0x3D:]) and not any(data[0x28:0x30])
    assert header.aad() == data[0x30:] and len(header.aad()) == 0x30
    assert header.iv() == bytes([8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0])


def _header_bytes(offset: int, value: int) -> bytes:
    data = bytearray(_header(msg_type=MessageType.KEY_REQ, msg_sz=0x20).to_bytes())
    data[offset] = value
    return bytes(data)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0x10, 1, "guest message: AUTHTAG bytes 16..31 are not zero"),
        (0x1F, 1, "guest message: AUTHTAG bytes 16..31 are not zero"),
        (0x30, 0, "guest message: ALGO 0 is not 1 (AES-256-GCM)"),
        (0x30, 2, "guest message: ALGO 2 is not 1 (AES-256-GCM)"),
        (0x31, 2, "guest message: header version 2 size 0x60 (expected 1, 0x60)"),
        (0x31, 0, "guest message: header version 0 size 0x60 (expected 1, 0x60)"),
        (0x32, 0x5F, "guest message: header version 1 size 0x5f (expected 1, 0x60)"),
        (0x33, 0x01, "guest message: header version 1 size 0x160 (expected 1, 0x60)"),
        (0x34, 0, "guest message: unknown MSG_TYPE 0"),
        (0x34, 19, "guest message: unknown MSG_TYPE 19"),
        (0x36, 0xA1, "guest message: MSG_SZ or MSG_VMPCK out of range"),  # 0xFA1 = 4001
        (0x3C, 4, "guest message: MSG_SZ or MSG_VMPCK out of range"),
    ],
)
def test_the_header_parser_refuses_each_field_by_name(
    offset: int, value: int, message: str
) -> None:
    data = bytearray(_header_bytes(offset, value))
    if offset == 0x36:
        data[0x37] = 0x0F
    with pytest.raises(FormatError) as caught:
        MessageHeader.from_bytes(bytes(data))
    assert str(caught.value) == message


def test_the_header_parser_takes_the_last_vmpck_and_the_largest_size() -> None:
    data = bytearray(_header_bytes(0x3C, 3))
    data[0x36:0x38] = MAX_PAYLOAD_SIZE.to_bytes(2, "little")
    header = MessageHeader.from_bytes(bytes(data))
    assert (header.msg_vmpck, header.msg_sz) == (3, MAX_PAYLOAD_SIZE)
    assert MessageHeader.from_bytes(_header_bytes(0x34, 18)).msg_type is MessageType.TSC_INFO_RSP


# -- the page ------------------------------------------------------------------------------------


def test_a_message_carries_exactly_msg_sz_bytes() -> None:
    with pytest.raises(UsageError) as caught:
        GuestMessage(_header(msg_sz=4), b"abc")
    assert str(caught.value) == "payload is 3 bytes, MSG_SZ says 4"


def test_a_page_is_4096_bytes_and_nothing_follows_the_payload() -> None:
    message = GuestMessage(_header(msg_sz=4), b"\x01\x02\x03\x04")
    page = message.to_page()
    assert len(page) == PAGE_SIZE and page[HEADER_SIZE : HEADER_SIZE + 4] == b"\x01\x02\x03\x04"
    assert not any(page[HEADER_SIZE + 4 :])
    assert GuestMessage.from_page(page) == message
    for size in (PAGE_SIZE - 1, PAGE_SIZE + 1):
        with pytest.raises(FormatError) as caught:
            GuestMessage.from_page(page.ljust(PAGE_SIZE + 1, b"\0")[:size])
        assert str(caught.value) == f"guest message page: expected 4096 bytes, got {size}"
    for offset in (HEADER_SIZE + 4, PAGE_SIZE - 1):
        dirty = bytearray(page)
        dirty[offset] = 1
        with pytest.raises(FormatError) as caught:
            GuestMessage.from_page(bytes(dirty))
        assert str(caught.value) == "guest message page: bytes after the payload are not zero"


# -- MSG_REPORT_REQ ------------------------------------------------------------------------------


def test_a_report_request_is_table_20() -> None:
    request = ReportRequest(bytes(range(64)), vmpl=2, key_sel=KeySelect.VLEK)
    data = request.to_bytes()
    assert data[:64] == bytes(range(64))
    assert data[0x40:0x44] == bytes([2, 0, 0, 0]) and data[0x44:0x48] == bytes([2, 0, 0, 0])
    assert not any(data[0x48:]) and len(data) == 0x60
    assert ReportRequest.from_bytes(data) == request


@pytest.mark.parametrize("key_sel", [3, 4, 7, 0x100, 0x8000_0000])
def test_a_report_request_with_a_reserved_key_selection_is_refused(key_sel: int) -> None:
    data = bytearray(ReportRequest(bytes(64)).to_bytes())
    data[0x44:0x48] = key_sel.to_bytes(4, "little")
    with pytest.raises(FormatError) as caught:
        ReportRequest.from_bytes(bytes(data))
    assert str(caught.value) == f"MSG_REPORT_REQ: KEY_SEL {key_sel:#x} is reserved"


def test_each_key_selection_is_read() -> None:
    for key_sel in KeySelect:
        data = ReportRequest(bytes(64), key_sel=key_sel).to_bytes()
        assert ReportRequest.from_bytes(data).key_sel is key_sel


def test_the_report_request_constructor_checks_its_fields() -> None:
    with pytest.raises(UsageError) as caught:
        ReportRequest(bytes(63))
    assert str(caught.value) == "REPORT_DATA must be 64 bytes, got 63"
    for vmpl in (-1, 1 << 32):
        with pytest.raises(UsageError) as caught:
            ReportRequest(bytes(64), vmpl)
        assert str(caught.value) == "VMPL is a u32"
    assert ReportRequest(bytes(64), (1 << 32) - 1).vmpl == (1 << 32) - 1


# -- MSG_REPORT_RSP ------------------------------------------------------------------------------


def test_a_report_response_is_table_23() -> None:
    report = bytes(range(256)) * 4 + bytes(REPORT_SIZE - 1024)
    data = ReportResponse(0, report).to_bytes()
    assert data[:8] == bytes(4) + REPORT_SIZE.to_bytes(4, "little") and not any(data[8:0x20])
    assert data[0x20:] == report
    failed = ReportResponse(0x16).to_bytes()
    assert failed[:8] == bytes([0x16, 0, 0, 0, 0, 0, 0, 0])
    assert len(failed) == 0x20 + REPORT_SIZE and not any(failed[8:])
    assert ReportResponse.from_bytes(failed) == ReportResponse(0x16)
    assert ReportResponse.from_bytes(failed[:0x20]) == ReportResponse(0x16)


def test_a_failed_report_response_carries_no_report() -> None:
    failed = bytearray(ReportResponse(0x27).to_bytes())
    failed[4] = 1  # REPORT_SIZE
    with pytest.raises(FormatError) as caught:
        ReportResponse.from_bytes(bytes(failed))
    assert str(caught.value) == "MSG_REPORT_RSP: a failed response carries a report"
    failed = bytearray(ReportResponse(0x27).to_bytes())
    failed[-1] = 1
    with pytest.raises(FormatError) as caught:
        ReportResponse.from_bytes(bytes(failed))
    assert str(caught.value) == "MSG_REPORT_RSP: a failed response carries a report"
    with pytest.raises(UsageError) as caught:
        ReportResponse(0x16, bytes(REPORT_SIZE))
    assert str(caught.value) == "a failed report response carries no report"


def test_a_successful_report_response_carries_exactly_one_report() -> None:
    good = ReportResponse(0, bytes(REPORT_SIZE)).to_bytes()
    for data, text in (
        (good[:-1], "REPORT_SIZE 0x4a0, 0x49f bytes follow"),
        (good + b"\0", "REPORT_SIZE 0x4a0, 0x4a1 bytes follow"),
        (
            good[:4] + (0x49F).to_bytes(4, "little") + good[8:],
            "REPORT_SIZE 0x49f, 0x4a0 bytes follow",
        ),
    ):
        with pytest.raises(FormatError) as caught:
            ReportResponse.from_bytes(data)
        assert str(caught.value) == f"MSG_REPORT_RSP: {text}"
    with pytest.raises(UsageError) as caught:
        ReportResponse(0, bytes(REPORT_SIZE - 1))
    assert str(caught.value) == "a successful report response carries 1184 bytes"


# -- MSG_KEY_REQ ---------------------------------------------------------------------------------


def test_a_key_request_is_table_18() -> None:
    request = KeyRequest(
        GuestFieldSelect.MEASUREMENT | GuestFieldSelect.GUEST_POLICY,
        RootKey.VMRK,
        vmpl=2,
        guest_svn=0x11223344,
        tcb_version=0x0102030405060708,
    )
    data = request.to_bytes()
    assert data == (
        bytes([1, 0, 0, 0]) + bytes(4) + bytes([9]) + bytes(7) + bytes([2, 0, 0, 0])
        + bytes([0x44, 0x33, 0x22, 0x11]) + bytes([8, 7, 6, 5, 4, 3, 2, 1])
    )
    assert request.msg_version == 1 and key_request_version(None) == 1
    assert KeyRequest.from_bytes(data) == request
    v2 = KeyRequest(GuestFieldSelect.LAUNCH_MIT_VECTOR, launch_mit_vector=0x1234)
    data = v2.to_bytes()
    assert len(data) == 0x28 and data[0x20:] == (0x1234).to_bytes(8, "little")
    assert data[8] == 0x40 and v2.msg_version == 2 and key_request_version(0) == 2
    assert KeyRequest.from_bytes(data) == v2


def test_each_guest_field_has_its_bit() -> None:
    assert [int(flag) for flag in GuestFieldSelect] == [1, 2, 4, 8, 16, 32, 64]
    every = KeyRequest(GuestFieldSelect(0x7F), launch_mit_vector=0)
    assert KeyRequest.from_bytes(every.to_bytes()).guest_field_select == GuestFieldSelect(0x7F)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0x00, 2, "MSG_KEY_REQ: ROOT_KEY_SELECT bits 31:1 are reserved"),
        (0x03, 0x80, "MSG_KEY_REQ: ROOT_KEY_SELECT bits 31:1 are reserved"),
        (0x08, 0x80, "MSG_KEY_REQ: GUEST_FIELD_SELECT 0x80 sets reserved bits"),
        (0x0F, 0x80, "MSG_KEY_REQ: GUEST_FIELD_SELECT 0x8000000000000000 sets reserved bits"),
        (0x08, 0x40, "MSG_KEY_REQ: LAUNCH_MIT_VECTOR selected in a version 1 request"),
    ],
)
def test_a_key_request_refuses_each_reserved_value_by_name(
    offset: int, value: int, message: str
) -> None:
    data = bytearray(KeyRequest().to_bytes())
    data[offset] = value
    with pytest.raises(FormatError) as caught:
        KeyRequest.from_bytes(bytes(data))
    assert str(caught.value) == message


def test_a_key_request_is_0x20_or_0x28_bytes() -> None:
    assert KeyRequest.from_bytes(bytes(0x20)) == KeyRequest()
    assert KeyRequest.from_bytes(bytes(0x28)) == KeyRequest(launch_mit_vector=0)
    for size in (0x1F, 0x21, 0x27, 0x29):
        with pytest.raises(FormatError) as caught:
            KeyRequest.from_bytes(bytes(size))
        assert str(caught.value) == f"MSG_KEY_REQ: expected 0x20 or 0x28 bytes, got {size:#x}"
    assert KeyRequest.from_bytes(bytes([1]) + bytes(0x1F)).root_key_select is RootKey.VMRK


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vmpl": 1 << 32}, "VMPL and GUEST_SVN are u32 values"),
        ({"vmpl": -1}, "VMPL and GUEST_SVN are u32 values"),
        ({"guest_svn": 1 << 32}, "VMPL and GUEST_SVN are u32 values"),
        ({"guest_svn": -1}, "VMPL and GUEST_SVN are u32 values"),
        ({"tcb_version": 1 << 64}, "TCB_VERSION is a u64"),
        ({"tcb_version": -1}, "TCB_VERSION is a u64"),
        (
            {"guest_field_select": GuestFieldSelect.LAUNCH_MIT_VECTOR},
            "LAUNCH_MIT_VECTOR can only be selected in a version 2 request",
        ),
    ],
)
def test_the_key_request_constructor_refuses_each_field_out_of_range(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        KeyRequest(**changes)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_the_key_request_constructor_takes_each_largest_value() -> None:
    request = KeyRequest(
        vmpl=(1 << 32) - 1, guest_svn=(1 << 32) - 1, tcb_version=(1 << 64) - 1
    )
    assert KeyRequest.from_bytes(request.to_bytes()) == request


# -- MSG_KEY_RSP ---------------------------------------------------------------------------------


def test_a_key_response_is_table_19() -> None:
    key = bytes(range(32))
    data = KeyResponse(0, key).to_bytes()
    assert data == bytes(0x20) + key
    failed = KeyResponse(0x16).to_bytes()
    assert failed == bytes([0x16]) + bytes(0x3F)
    assert KeyResponse.from_bytes(failed) == KeyResponse(0x16)


def test_a_failed_key_response_carries_no_key() -> None:
    data = bytearray(KeyResponse(0x16).to_bytes())
    data[-1] = 1
    with pytest.raises(FormatError) as caught:
        KeyResponse.from_bytes(bytes(data))
    assert str(caught.value) == "MSG_KEY_RSP: a failed response carries a key"


def test_the_key_response_constructor_checks_its_fields() -> None:
    for key in (bytes(31), bytes(33)):
        with pytest.raises(UsageError) as caught:
            KeyResponse(0, key)
        assert str(caught.value) == "a derived key is 32 bytes"
    for status in (-1, 1 << 32):
        with pytest.raises(UsageError) as caught:
            KeyResponse(status)
        assert str(caught.value) == "STATUS is a u32"
    assert KeyResponse((1 << 32) - 1).status == (1 << 32) - 1
