"""SVSM protocol structures (AMD 58019): round trips and strictness."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.svsm.attest_request import AttestRequest
from cvm.formats.svsm.services_manifest import VTPM_SERVICE_GUID, ServicesManifest
from cvm.formats.svsm.vtpm_command import VtpmCommandRequest, VtpmCommandResponse
from cvm.wire import Guid

U64 = st.integers(0, 2**64 - 1)
U32 = st.integers(0, 2**32 - 1)
guids = st.uuids().map(Guid)


@given(st.integers(0, 4), st.binary(max_size=300))
def test_vtpm_command_round_trip(locality: int, command: bytes) -> None:
    request = VtpmCommandRequest(locality, command)
    assert VtpmCommandRequest.from_bytes(request.to_bytes() + bytes(20)) == request
    response = VtpmCommandResponse(command)
    assert VtpmCommandResponse.from_bytes(response.to_bytes()) == response


@given(st.tuples(U64, U32, U64, st.integers(0, 0xFFFF), U64, U32, U64, U32),
       st.one_of(st.none(), guids), U32)
def test_attest_request_round_trip(numbers: tuple[int, ...], service: Guid | None,
                                   version: int) -> None:
    request = AttestRequest(*numbers, service=service,
                            manifest_version=version if service is not None else 0)
    assert AttestRequest.from_bytes(request.to_bytes(), service is not None) == request


@given(st.lists(st.tuples(guids, st.binary(max_size=50)), max_size=4))
def test_manifest_round_trip(services: list[tuple[Guid, bytes]]) -> None:
    manifest = ServicesManifest(tuple(services))
    assert ServicesManifest.from_bytes(manifest.to_bytes()) == manifest


def test_manifest_lookup_and_strictness() -> None:
    data = ServicesManifest(((VTPM_SERVICE_GUID, b"ek"),)).to_bytes()
    assert ServicesManifest.from_bytes(data).service(VTPM_SERVICE_GUID) == b"ek"
    for broken in (data[:-1], data + b"\x00", bytes(16) + data[16:]):
        try:
            ServicesManifest.from_bytes(broken)
        except FormatError:
            continue
        raise AssertionError("accepted a broken manifest")
    assert uuid.UUID(str(VTPM_SERVICE_GUID)) == uuid.UUID("c476f1eb-0123-45a5-9641-b4e7dde5bfe3")


@given(st.binary(max_size=120))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    for parse in (VtpmCommandRequest.from_bytes, VtpmCommandResponse.from_bytes,
                  ServicesManifest.from_bytes, lambda d: AttestRequest.from_bytes(d, True)):
        with contextlib.suppress(FormatError):
            parse(data)


@given(st.binary(max_size=40), st.integers(0, 4200), st.integers(0, 0x1FF))
def test_vtpm_command_fast_path_agrees_with_the_reader(tail: bytes, size: int,
                                                       locality: int) -> None:
    """A request or response whose size is too large or reaches past the page is refused as
    the field-by-field reader refuses it; one that fits reads the same."""
    request = (8).to_bytes(4, "little") + bytes([locality & 0xFF]) + size.to_bytes(4, "little")
    response = size.to_bytes(4, "little")
    for parse, strict, data, whole in (
        (VtpmCommandRequest.from_bytes, VtpmCommandRequest._from_bytes_strict, request + tail,
         True),
        (VtpmCommandRequest.from_bytes, VtpmCommandRequest._from_bytes_strict, request[:7],
         False),
        (VtpmCommandResponse.from_bytes, VtpmCommandResponse._from_bytes_strict,
         response + tail, True),
        (VtpmCommandResponse.from_bytes, VtpmCommandResponse._from_bytes_strict, response[:3],
         False),
    ):
        try:
            expected: object = strict(data)
        except FormatError as error:
            expected = str(error)
        try:
            found: object = parse(data)
        except FormatError as error:
            found = str(error)
        assert found == expected
        if whole and size <= len(tail) and size <= 0x1000 - 9:
            assert not isinstance(found, str)


def test_vtpm_command_buffers_refuse_what_does_not_fit() -> None:
    with pytest.raises(FormatError, match="exceeds 4087"):
        VtpmCommandRequest(0, bytes(4088)).to_bytes()
    with pytest.raises(UsageError, match="does not fit in 1 bytes"):
        VtpmCommandRequest(256, b"").to_bytes()
    with pytest.raises(FormatError, match="exceeds 4092"):
        VtpmCommandResponse(bytes(4093)).to_bytes()
    with pytest.raises(FormatError, match="inbuf_size 4088 exceeds 4087"):
        VtpmCommandRequest.from_bytes(bytes(5) + (4088).to_bytes(4, "little") + bytes(4088))
    with pytest.raises(FormatError, match="outbuf_size 4093 exceeds 4092"):
        VtpmCommandResponse.from_bytes((4093).to_bytes(4, "little") + bytes(4093))
    with pytest.raises(FormatError, match="inbuf needs 10 bytes"):
        VtpmCommandRequest.from_bytes(bytes(5) + (10).to_bytes(4, "little") + bytes(9))
