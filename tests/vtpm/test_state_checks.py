"""The non-volatile state's reader, check by check: a state cut inside any field is refused
with a message naming that field and its offset; every size limit (seeds, proofs, authValues,
saved PCRs, NV authValues, qualified names) refuses one byte more; the flags, magic and version
refusals say what is wrong; and the usual state is read by the fast reader alone."""

from __future__ import annotations

from typing import Any

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.tpm2.constants import TpmAlg, TpmRh
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.state import HIERARCHIES, NvIndex, PersistentState
from cvm.vtpm.templates import srk_template

NV = 0x01500002
PERSISTENT = 0x81000001
COUNTERS = 59  # six u32, two u64, u8, two u64, two u8


def _full(client: TpmClient, tpm: Tpm) -> PersistentState:
    """A state with something in every section: authValues, saved PCRs, an NV index and a
    persistent object."""
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    client.evict_control(srk, PERSISTENT)
    state = PersistentState.from_bytes(tpm.state.to_bytes())
    state.auths = {TpmRh.PLATFORM: b"p", TpmRh.OWNER: b"o" * 3, TpmRh.ENDORSEMENT: b"",
                   TpmRh.LOCKOUT: b"l" * 2}
    state.saved_pcrs = {TpmAlg.SHA256: [b"\x11" * 32, b"\x22" * 32]}
    state.nv = {NV: NvIndex(NvPublic(NV, TpmAlg.SHA256, 0x00060006, b"", 8), b"na", b"d" * 8)}
    return state


def _layout(state: PersistentState) -> list[tuple[str, int, bool]]:
    """The documented order of the fields: (label, bytes, whether it is a TPM2B)."""
    fields: list[tuple[str, int, bool]] = [("magic", 8, False), ("version", 4, False)]
    for handle in HIERARCHIES[:3]:
        fields += [("seed", 2 + len(state.seeds[handle]), True),
                   ("proof", 2 + len(state.proofs[handle]), True)]
    fields += [("auth", 2 + len(state.auths[handle]), True) for handle in HIERARCHIES]
    fields += [("counters and timers", COUNTERS, False), ("saved PCR banks", 4, False)]
    for _, values in sorted(state.saved_pcrs.items()):
        fields += [("bank", 2, False), ("PCR count", 4, False)]
        fields += [("PCR", 2 + len(value), True) for value in values]
    fields += [("NV count", 4, False)]
    for _, index in sorted(state.nv.items()):
        fields += [("TPM2B_NV_PUBLIC", len(index.public.to_tpm2b()), True),
                   ("NV auth", 2 + len(index.auth_value), True),
                   ("NV data", 2 + len(index.data), True)]
    fields += [("persistent count", 4, False)]
    for _, item in sorted(state.persistent.items()):
        assert item.sensitive is not None
        fields += [("handle", 4, False), ("hierarchy", 4, False),
                   ("TPM2B_PUBLIC", len(item.public.to_tpm2b()), True),
                   ("sensitive", 2 + len(item.sensitive.to_bytes()), True),
                   ("qualified name", 2 + len(item.qualified_name), True)]
    return fields


def test_a_state_cut_inside_any_field_names_that_field(client: TpmClient, tpm: Tpm) -> None:
    state = _full(client, tpm)
    data = state.to_bytes()
    fields = _layout(state)
    assert sum(size for _, size, _ in fields) == len(data)
    assert PersistentState.from_bytes(data) == state
    start = 0
    for label, size, sized in fields:
        with pytest.raises(FormatError) as refused:
            PersistentState.from_bytes(data[:start + 1])
        name, needs = (f"{label}.size", 2) if sized else (label, size)
        assert str(refused.value) == (f"vTPM state: {name} needs {needs} bytes at offset "
                                      f"{start:#x}, only 1 left"), label
        start += size


def _refused(state: PersistentState) -> str:
    with pytest.raises(FormatError) as refused:
        PersistentState.from_bytes(state.to_bytes())
    return str(refused.value)


def _hierarchies(size: int) -> dict[int, bytes]:
    return {h: bytes([size]) * size for h in HIERARCHIES[:3]}


def test_every_size_limit_refuses_one_byte_more(client: TpmClient, tpm: Tpm) -> None:
    state = _full(client, tpm)
    assert _refused(PersistentState(_hierarchies(32), _hierarchies(33))).startswith(
        "vTPM state: proof.size 33 exceeds the maximum 32 (at offset ")
    for handle in HIERARCHIES:
        longest = PersistentState(_hierarchies(32), _hierarchies(32),
                                  {handle: b"a" * 64})
        assert PersistentState.from_bytes(longest.to_bytes()) == PersistentState(
            _hierarchies(32), _hierarchies(32),
            {h: b"a" * 64 if h == handle else b"" for h in HIERARCHIES})
        longest.auths[handle] += b"a"
        assert _refused(longest).startswith(
            "vTPM state: auth.size 65 exceeds the maximum 64 (at offset ")
    state.saved_pcrs = {TpmAlg.SHA512: [b"\x33" * 64]}
    assert PersistentState.from_bytes(state.to_bytes()) == state
    state.saved_pcrs = {TpmAlg.SHA512: [b"\x33" * 65]}
    assert _refused(state).startswith("vTPM state: PCR.size 65 exceeds the maximum 64")
    state.saved_pcrs = {}
    state.nv[NV].auth_value = b"n" * 64
    assert PersistentState.from_bytes(state.to_bytes()) == state
    state.nv[NV].auth_value = b"n" * 65
    assert _refused(state).startswith("vTPM state: NV auth.size 65 exceeds the maximum 64")
    state.nv = {}
    item = state.persistent[PERSISTENT]
    item.qualified_name = b"q" * 66
    assert PersistentState.from_bytes(state.to_bytes()) == state
    item.qualified_name = b"q" * 67
    assert _refused(state).startswith(
        "vTPM state: qualified name.size 67 exceeds the maximum 66")


def test_magic_version_and_flags_are_refused_by_name() -> None:
    data = PersistentState.manufacture(bytes).to_bytes()
    for broken, message in ((b"X" + data[1:], "vTPM state: bad magic"),
                            (data[:11] + b"\x01" + data[12:],
                             "vTPM state: unsupported version")):
        with pytest.raises(FormatError) as refused:
            PersistentState.from_bytes(broken)
        assert str(refused.value) == message
    run = len(data) - 12 - COUNTERS
    for offset, name in ((40, "orderly"), (57, "lockOutAuthEnabled"), (58, "daUsed")):
        broken = data[:run + offset] + b"\x07" + data[run + offset + 1:]
        with pytest.raises(FormatError) as refused:
            PersistentState.from_bytes(broken)
        assert str(refused.value) == f"vTPM state: {name} is 7, not a boolean"


def test_a_hierarchy_without_an_auth_is_written_with_an_empty_one() -> None:
    state = PersistentState(_hierarchies(32), _hierarchies(32), {TpmRh.OWNER: b"o"})
    assert PersistentState.from_bytes(state.to_bytes()).auths == {
        TpmRh.PLATFORM: b"", TpmRh.OWNER: b"o", TpmRh.ENDORSEMENT: b"", TpmRh.LOCKOUT: b""}


@pytest.mark.parametrize("field", ["failed_tries", "clock_ms", "self_heal_ms"])
@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_a_counter_out_of_range_is_refused_when_written(field: str, value: int) -> None:
    state = PersistentState.manufacture(bytes)
    setattr(state, field, value)
    with pytest.raises(UsageError) as refused:
        state.to_bytes()
    assert str(refused.value) == "vTPM state: a counter or timer is out of range"


def test_the_usual_state_is_read_by_the_fast_reader_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    state = PersistentState.manufacture(lambda n: b"\x42" * n)
    data = state.to_bytes()

    def field_by_field(data: Any) -> PersistentState:
        raise AssertionError("the usual state went to the field-by-field reader")

    monkeypatch.setattr(PersistentState, "_from_bytes_checked", field_by_field)
    assert PersistentState.from_bytes(data) == state
