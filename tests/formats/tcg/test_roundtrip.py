"""Hypothesis round trips of the event-log formats, and mutated logs giving only FormatError."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.tcg.algorithm import SHA1, SHA256, SHA384, SHA512
from cvm.formats.tcg.device_path import DevicePath, DevicePathNode
from cvm.formats.tcg.event_data import decode_event_data
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.firmware_blob import FirmwareBlob, HandoffTables
from cvm.formats.tcg.gpt_data import UefiGptData
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.no_action import StartupLocalityEvent
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.replay import replay
from cvm.formats.tcg.spec_id_event import SPEC_ID_SIGNATURE, AlgorithmSize, SpecIdEvent
from cvm.formats.tcg.tagged_event import TaggedEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.wire import Guid

u32s = st.integers(0, 0xFFFFFFFF)
u64s = st.integers(0, 2**64 - 1)
guids = st.uuids().map(Guid)
blobs = st.binary(max_size=64)


@st.composite
def spec_ids(draw: st.DrawFn) -> SpecIdEvent:
    algs = draw(
        st.lists(
            st.sampled_from([SHA1, SHA256, SHA384, SHA512]), min_size=1, max_size=4, unique=True
        )
    )
    return SpecIdEvent(
        tuple(AlgorithmSize(a.alg_id, a.digest_size) for a in algs),
        platform_class=draw(st.integers(0, 1)),
        spec_errata=draw(st.integers(0, 255)),
        uintn_size=draw(st.sampled_from([1, 2])),
        vendor_info=draw(st.binary(max_size=16)),
    )


@st.composite
def agile_logs(draw: st.DrawFn) -> EventLog:
    spec = draw(spec_ids())
    sizes = {a.alg_id: a.digest_size for a in spec.algorithms}
    events = []
    for _ in range(draw(st.integers(0, 6))):
        banks = draw(st.permutations(list(sizes)))[: draw(st.integers(0, len(sizes)))]
        digests = tuple(
            (alg, draw(st.binary(min_size=sizes[alg], max_size=sizes[alg]))) for alg in banks
        )
        events.append(PcrEvent(draw(u32s), draw(u32s), digests, draw(blobs)))
    return EventLog(spec, tuple(events))


@st.composite
def legacy_logs(draw: st.DrawFn) -> EventLog:
    events = [
        PcrEvent(
            draw(u32s),
            draw(u32s),
            ((SHA1.alg_id, draw(st.binary(min_size=20, max_size=20))),),
            draw(blobs),
        )
        for _ in range(draw(st.integers(1, 6)))
    ]
    if events[0].event.startswith(SPEC_ID_SIGNATURE):
        events[0] = PcrEvent(0, 1, events[0].digests, b"")
    first = events[0]  # a log starts with a record of one of the TPM's 24 PCRs
    events[0] = PcrEvent(first.pcr_index % 24, first.event_type, first.digests, first.event)
    return EventLog(None, tuple(events))


@given(st.one_of(agile_logs(), legacy_logs()))
def test_event_log_round_trip(log: EventLog) -> None:
    data = log.to_bytes()
    assert EventLog.parse(data) == log
    assert EventLog.parse(data).to_bytes() == data


nodes = st.builds(DevicePathNode, st.integers(0, 255), st.integers(0, 255), blobs)


@given(
    st.builds(
        UefiVariableData,
        guids,
        st.text(max_size=12).filter(
            lambda s: s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "ignore") == s
        ),
        blobs,
    )
)
def test_variable_data_round_trip(value: UefiVariableData) -> None:
    assert UefiVariableData.parse(value.to_bytes()) == value


@given(
    st.builds(
        UefiImageLoadEvent,
        u64s,
        u64s,
        u64s,
        st.lists(nodes, max_size=4).map(lambda n: DevicePath(tuple(n))),
    )
)
def test_image_load_event_round_trip(value: UefiImageLoadEvent) -> None:
    assert UefiImageLoadEvent.parse(value.to_bytes()) == value
    assert value.describe()


@given(st.builds(TaggedEvent, u32s, blobs))
def test_tagged_event_round_trip(value: TaggedEvent) -> None:
    assert TaggedEvent.parse(value.to_bytes()) == value


@given(u64s, u64s, st.none() | st.binary(max_size=40))
def test_firmware_blob_round_trip(base: int, length: int, description: bytes | None) -> None:
    blob = FirmwareBlob(base, length, description)
    assert FirmwareBlob.parse(blob.to_bytes(), 1 if description is None else 2) == blob


@given(st.lists(st.tuples(guids, u64s), max_size=4), st.none() | st.binary(max_size=40))
def test_handoff_tables_round_trip(
    tables: list[tuple[Guid, int]],
    description: bytes | None,
) -> None:
    value = HandoffTables(tuple(tables), description)
    assert HandoffTables.parse(value.to_bytes(), 1 if description is None else 2) == value


@given(st.integers(0, 4))
def test_startup_locality_round_trip(locality: int) -> None:
    event = StartupLocalityEvent(locality)
    assert StartupLocalityEvent.parse(event.to_bytes()) == event


def _exercise(data: bytes) -> None:
    try:
        log = EventLog.parse(data)
        replay(log)
        for event in log.events:
            decoded = decode_event_data(event.event_type, event.event)
            decoded.describe()
            json.dumps(decoded.to_json())
    except FormatError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_real_log_gives_only_format_errors(vectors: Path, data: st.DataObject) -> None:
    original = bytearray((vectors / "realboot/eventlog.bin").read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        where = data.draw(st.integers(0, len(original) - 1))
        original[where] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    _exercise(bytes(original[:cut]) if data.draw(st.booleans()) else bytes(original))


@given(st.binary(max_size=300))
def test_random_bytes_give_only_format_errors(data: bytes) -> None:
    _exercise(data)
    for event_type in EventType:
        with contextlib.suppress(FormatError):
            decoded = decode_event_data(event_type, data)
            assert decoded.to_bytes() == data
            decoded.describe()
            json.dumps(decoded.to_json())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_event_data_gives_only_format_errors(vectors: Path, data: st.DataObject) -> None:
    log = EventLog.parse((vectors / "tpm/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin").read_bytes())
    real = EventLog.parse((vectors / "realboot/eventlog.bin").read_bytes())
    event = data.draw(st.sampled_from(log.events + real.events))
    mutated = bytearray(event.event)
    if mutated:
        for _ in range(data.draw(st.integers(1, 4))):
            mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    with contextlib.suppress(FormatError):
        decoded = decode_event_data(event.event_type, bytes(mutated[:cut]))
        decoded.describe()
        json.dumps(decoded.to_json())


@given(st.binary(min_size=76, max_size=76), st.integers(128, 256),
       st.lists(st.binary(min_size=256, max_size=256), max_size=3))
def test_gpt_data_round_trip(rest: bytes, entry_size: int, entries: list[bytes]) -> None:
    # signature, 76 arbitrary bytes, SizeOfPartitionEntry at 0x54, PartitionEntryArrayCRC32.
    header = b"EFI PART" + rest + entry_size.to_bytes(4, "little") + rest[:4]
    value = UefiGptData(header, tuple(e[:entry_size] for e in entries))
    assert UefiGptData.parse(value.to_bytes()) == value
    json.dumps(value.to_json())
