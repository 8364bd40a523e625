"""SNP_GUEST_REQUEST: a message whose header names another AEAD algorithm is refused.

56860 Table 98: ALGO 1 is AES-256-GCM, 0 is invalid and every other value reserved. The
firmware refuses such a request with INVALID_PARAM before it decrypts anything, even when the
message is correctly sealed under the VMPCK, and the sequence number stays unused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from cvm.crypto import aead
from cvm.errors import FormatError, StatusError
from cvm.formats.snp.guest_message import GuestMessage, MessageHeader, MessageType
from cvm.formats.snp.report_request import ReportRequest
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.psp.status import SevStatus
from cvm.host.vmm import Hypervisor

Launch = Callable[..., Any]


def _sealed(key: bytes, vmpck: int, seqno: int, payload: bytes, algo: int) -> bytes:
    header = MessageHeader(seqno, MessageType.REPORT_REQ, len(payload), vmpck, algo=algo)
    ciphertext, tag = aead.encrypt(key, header.iv(), payload, header.aad())
    return GuestMessage(dataclasses.replace(header, authtag=tag), ciphertext).to_page()


@pytest.mark.parametrize("algo", [0, 2, 0xFF])
def test_a_request_naming_another_algorithm_is_refused(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch, algo: int
) -> None:
    _, psp = platform
    launched, _ = launch()
    guest = requester(launched)
    payload = ReportRequest(bytes(64)).to_bytes()
    page = _sealed(guest.key, guest.vmpck, guest.seqno + 1, payload, algo)
    with pytest.raises(StatusError) as refused:
        psp.snp_guest_request(launched.handle, page)
    assert refused.value.code == SevStatus.INVALID_PARAM
    assert str(refused.value) == (
        "SNP_GUEST_REQUEST failed with INVALID_PARAM (0x16): "
        f"guest message: ALGO {algo} is not 1 (AES-256-GCM)"
    )
    assert guest.report(bytes(64)).status == 0  # the sequence number was not used


def test_the_same_request_naming_aes_256_gcm_is_answered(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch
) -> None:
    _, psp = platform
    launched, _ = launch()
    guest = requester(launched)
    payload = ReportRequest(bytes(64)).to_bytes()
    page = _sealed(guest.key, guest.vmpck, guest.seqno + 1, payload, 1)
    answer = GuestMessage.from_page(psp.snp_guest_request(launched.handle, page))
    assert answer.header.msg_type is MessageType.REPORT_RSP and answer.header.algo == 1


def test_a_response_naming_another_algorithm_is_refused_by_the_guest_parser() -> None:
    page = bytearray(GuestMessage(MessageHeader(2, MessageType.REPORT_RSP, 0, 0), b"").to_page())
    page[0x30] = 0
    with pytest.raises(FormatError) as caught:
        GuestMessage.from_page(bytes(page))
    assert str(caught.value) == "guest message: ALGO 0 is not 1 (AES-256-GCM)"
