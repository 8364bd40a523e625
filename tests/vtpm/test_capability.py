"""GetCapability, GetRandom and the command table (Part 3 sections 16.1 and 30.2)."""

from __future__ import annotations

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmCap, TpmCc, TpmPt
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.formats.tpm2.tpm2b import reader
from cvm.guest.tpm.client import TpmClient


def _properties(client: TpmClient) -> dict[int, int]:
    more, data = client.get_capability(TpmCap.TPM_PROPERTIES, TpmPt.FAMILY_INDICATOR, 64)
    source = reader(data, "capability")
    assert source.u32() == TpmCap.TPM_PROPERTIES
    values = {source.u32(): source.u32() for _ in range(source.u32())}
    assert not more
    return values


def test_properties_pcrs_and_commands(client: TpmClient) -> None:
    values = _properties(client)
    assert values[TpmPt.FAMILY_INDICATOR] == int.from_bytes(b"2.0\x00", "big")
    assert values[TpmPt.PCR_COUNT] == 24 and values[TpmPt.MAX_AUTH_FAIL] == 3
    _, data = client.get_capability(TpmCap.PCRS, 0, 1)
    source = reader(data, "capability")
    assert source.u32() == TpmCap.PCRS
    banks = PcrSelectionList.read(source)
    assert [s.hash_alg for s in banks.selections] == [TpmAlg.SHA1, TpmAlg.SHA256, TpmAlg.SHA384]
    more, data = client.get_capability(TpmCap.COMMANDS, TpmCc.CREATE_PRIMARY, 2)
    source = reader(data, "capability")
    source.u32()
    assert source.u32() == 2 and more
    assert source.u32() & 0xFFFF == TpmCc.CREATE_PRIMARY
    with pytest.raises(StatusError) as refused:
        client.get_capability(0x99, 0, 1)
    assert refused.value.code == for_parameter(TpmRc.VALUE, 1)


def test_get_random_is_capped(client: TpmClient) -> None:
    assert len(client.get_random(16)) == 16
    assert len(client.get_random(1000)) == 64
