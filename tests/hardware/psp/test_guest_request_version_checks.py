"""SNP_GUEST_REQUEST: MSG_VERSION decides the request's layout.

56860: MSG_KEY_REQ version 1 is 0x20 bytes, version 2 (firmware 1.58 and later) 0x28 bytes with
LAUNCH_MIT_VECTOR; MSG_REPORT_REQ has one version. A request whose MSG_VERSION and size disagree,
or whose version does not exist, is answered with the message's INVALID_PARAMETERS status and no
key or report. The response carries the request's MSG_VERSION, and the guest's driver sends the
version its request needs and refuses a response with another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cvm.errors import IntegrityError
from cvm.formats.snp.guest_message import GuestMessage, MessageType
from cvm.formats.snp.key_request import (
    KEY_REQ_LAYOUT_V1,
    KeyRequest,
    KeyResponse,
    KeyStatus,
)
from cvm.formats.snp.report_request import ReportRequest, ReportResponse, ReportStatus
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.vmm import Hypervisor

Launch = Callable[..., Any]
V1 = KeyRequest()
V2 = KeyRequest(launch_mit_vector=0x5A)


def _ask(platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch,
         kind: MessageType, payload: bytes, version: int) -> tuple[GuestMessage, bytes]:
    """One request sealed by the guest with ``version``: the response page's header and the
    decrypted payload."""
    _, psp = platform
    launched, _ = launch()
    guest = requester(launched)
    seqno = guest.seqno + 1
    page = guest.seal(kind, payload, seqno, version)
    response = psp.snp_guest_request(launched.handle, page)
    return GuestMessage.from_page(response), guest._open(kind, response, seqno + 1, version)


@pytest.mark.parametrize(("payload", "version"), [
    (V1.to_bytes(), 2),  # 0x20 bytes called version 2
    (V2.to_bytes(), 1),  # 0x28 bytes called version 1
    (V1.to_bytes(), 0),
    (V2.to_bytes(), 3),
])
def test_a_key_request_whose_version_and_size_disagree_gets_no_key(
        platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch,
        payload: bytes, version: int) -> None:
    message, plain = _ask(platform, launch, requester, MessageType.KEY_REQ, payload, version)
    answer = KeyResponse.from_bytes(plain)
    assert answer.status == KeyStatus.INVALID_PARAMETERS
    assert answer.derived_key == bytes(32)
    assert message.header.msg_version == version


@pytest.mark.parametrize(("request_", "version"), [(V1, 1), (V2, 2)])
def test_each_key_request_version_with_its_size_is_answered(
        platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch,
        request_: KeyRequest, version: int) -> None:
    assert len(request_.to_bytes()) == (KEY_REQ_LAYOUT_V1.size if version == 1 else 0x28)
    message, plain = _ask(platform, launch, requester, MessageType.KEY_REQ,
                          request_.to_bytes(), version)
    answer = KeyResponse.from_bytes(plain)
    assert answer.status == KeyStatus.SUCCESS and any(answer.derived_key)
    assert message.header.msg_version == version


def test_the_guest_sends_version_2_for_a_launch_mitigation_vector(
        platform: tuple[Hypervisor, SecureProcessor], launch: Launch,
        requester: Launch) -> None:
    launched, _ = launch()
    guest = requester(launched)
    sent: list[int] = []
    exchange = guest.exchange

    def spy(page: bytes) -> tuple[int, bytes]:
        sent.append(GuestMessage.from_page(page).header.msg_version)
        return exchange(page)  # type: ignore[no-any-return]

    guest.exchange = spy
    assert guest.derived_key(V1).status == KeyStatus.SUCCESS
    assert guest.derived_key(V2).status == KeyStatus.SUCCESS
    assert guest.report(bytes(64)).status == ReportStatus.SUCCESS
    assert sent == [1, 2, 1]


@pytest.mark.parametrize("version", [0, 2])
def test_a_report_request_of_another_version_gets_no_report(
        platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch,
        version: int) -> None:
    _, plain = _ask(platform, launch, requester, MessageType.REPORT_REQ,
                    ReportRequest(bytes(64)).to_bytes(), version)
    answer = ReportResponse.from_bytes(plain)
    assert answer.status == ReportStatus.INVALID_PARAMETERS and not answer.report


def test_the_guest_refuses_a_response_of_another_version(
        platform: tuple[Hypervisor, SecureProcessor], launch: Launch,
        requester: Launch) -> None:
    _, psp = platform
    launched, _ = launch()
    guest = requester(launched)
    page = guest.seal(MessageType.KEY_REQ, V1.to_bytes(), guest.seqno + 1, 1)
    response = psp.snp_guest_request(launched.handle, page)
    with pytest.raises(IntegrityError, match=r"VMPCK0 version 1, expected seqno 2 KEY_RSP "
                                             r"VMPCK0 version 2$"):
        guest._open(MessageType.KEY_REQ, response, 2, 2)


def test_a_message_is_sealed_as_version_1_unless_told(
        platform: tuple[Hypervisor, SecureProcessor], launch: Launch,
        requester: Launch) -> None:
    launched, _ = launch()
    guest = requester(launched)
    page = guest.seal(MessageType.REPORT_REQ, ReportRequest(bytes(64)).to_bytes(), 1)
    assert GuestMessage.from_page(page).header.msg_version == 1
