"""PCR banks: initial values, localities, update counter (PC Client PTP Table 3)."""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import StatusError, UsageError
from cvm.formats.tpm2.constants import TpmAlg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.engine import Tpm


def test_initial_values(client: TpmClient) -> None:
    _, _, values = client.pcr_read(PcrSelectionList.parse_text("sha256:0,16,17,22,23"))
    assert values == [bytes(32), bytes(32), b"\xff" * 32, b"\xff" * 32, bytes(32)]
    _, selected, values = client.pcr_read(PcrSelectionList.parse_text("sha1:17+sha384:0"))
    assert values == [b"\xff" * 20, bytes(48)]
    assert str(selected) == "sha1:17+sha384:0"


def test_startup_locality_lands_in_pcr0(tpm: Tpm) -> None:
    client = TpmClient(lambda data: tpm.execute(data, locality=3))
    client.startup()
    _, _, values = client.pcr_read(PcrSelectionList.of("sha256", [0]))
    assert values == [bytes(31) + b"\x03"]


def test_extend_event_and_counter(client: TpmClient) -> None:
    sel = PcrSelectionList.of("sha256", [7])
    before, _, _ = client.pcr_read(sel)
    measured = hashlib.sha256(b"abc").digest()
    client.pcr_extend(7, {TpmAlg.SHA256: measured})
    after, _, values = client.pcr_read(sel)
    assert after == before + 1
    assert values[0] == hashlib.sha256(bytes(32) + measured).digest()
    digests = client.pcr_event(8, b"event data")
    assert digests[TpmAlg.SHA384] == hashlib.sha384(b"event data").digest()
    _, _, values = client.pcr_read(PcrSelectionList.of("sha1", [8]))
    assert values[0] == hashlib.sha1(bytes(20) + hashlib.sha1(b"event data").digest()).digest()


def test_localities(tpm: Tpm, client: TpmClient) -> None:
    with pytest.raises(StatusError) as refused:
        client.pcr_extend(17, {TpmAlg.SHA256: bytes(32)})
    assert refused.value.code == TpmRc.LOCALITY
    with pytest.raises(StatusError) as refused:
        client.pcr_reset(0)
    assert refused.value.code == TpmRc.LOCALITY
    client.pcr_extend(16, {TpmAlg.SHA256: bytes(32)})
    client.pcr_reset(16)
    drtm = TpmClient(lambda data: tpm.execute(data, locality=4))
    drtm.pcr_reset(17)
    _, _, values = client.pcr_read(PcrSelectionList.of("sha256", [16, 17]))
    assert values == [bytes(32), bytes(32)]


def test_tcb_group_does_not_count(tpm: Tpm) -> None:
    client = TpmClient(lambda data: tpm.execute(data, locality=2))
    client.startup()
    before, _, _ = client.pcr_read(PcrSelectionList.of("sha256", [21]))
    client.pcr_extend(21, {TpmAlg.SHA256: bytes(32)})
    after, _, _ = client.pcr_read(PcrSelectionList.of("sha256", [21]))
    assert after == before


def test_pcr_read_returns_at_most_eight(client: TpmClient) -> None:
    _, selected, values = client.pcr_read(PcrSelectionList.of("sha256", range(24)))
    assert len(values) == 8
    assert selected.items()[-1] == (TpmAlg.SHA256, 7)
    _, selected, values = client.pcr_read(PcrSelectionList.of("sha512", [0]))
    assert values == []
    assert selected.items() == ()


def test_an_extend_with_an_algorithm_that_does_not_fit_is_refused_by_the_client(
        client: TpmClient) -> None:
    with pytest.raises(UsageError, match="does not fit in 2 bytes"):
        client.pcr_extend(7, {0x10000: bytes(32)})
