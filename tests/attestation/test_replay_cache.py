"""The appraisal's cache of parsed and replayed event logs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cvm.attestation.verifier.pcr_replay import ReplayCache, replayed_pcrs
from cvm.errors import FormatError
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType

LOG = next(Path(__file__).parents[1].joinpath("vectors").glob("*/eventlog.bin")).read_bytes()
PCRS = (0, 1, 2, 3, 4, 5, 6, 7)


def test_a_cached_replay_equals_a_fresh_one_and_is_not_shared() -> None:
    cache = ReplayCache(size=2)
    log, values = cache.replay(LOG, "sha256", PCRS)
    assert log == EventLog.parse(LOG)
    assert values == replayed_pcrs(EventLog.parse(LOG), "sha256", PCRS)
    values[0] = b"changed by a caller"
    again_log, again = cache.replay(LOG, "sha256", PCRS)
    assert again_log is log  # served from the cache...
    assert again[0] != b"changed by a caller"  # ...as a copy


def test_another_log_or_selection_is_replayed_anew_and_the_cache_is_bounded() -> None:
    cache = ReplayCache(size=2)
    log, values = cache.replay(LOG, "sha256", PCRS)
    shorter = replace(log, events=log.events[:-1]).to_bytes()
    assert cache.replay(shorter, "sha256", PCRS)[1] == replayed_pcrs(
        EventLog.parse(shorter), "sha256", PCRS)
    assert cache.replay(shorter, "sha256", PCRS)[1] != values
    assert cache.replay(LOG, "sha256", (4,))[1] == {4: values[4]}
    assert len(cache._entries) == 2  # the oldest went
    assert cache.replay(LOG, "sha256", PCRS)[0] is not log


def test_a_malformed_log_is_refused_every_time() -> None:
    cache = ReplayCache()
    for _ in range(2):
        with pytest.raises(FormatError):
            cache.replay(b"\x00" * 10, "sha256", PCRS)
    assert not cache._entries


def test_an_unextended_pcr0_starts_at_the_startup_locality() -> None:
    """A log whose StartupLocality is 3 and that never extends PCR 0: the quoted PCR 0 is
    0…03, what TPM2_Startup at locality 3 leaves (and 0…00 for a PCR nothing extends)."""
    log = EventLog.parse(Path(__file__).parents[1].joinpath(
        "vectors", "tpm", "keylime", "binary_bios_measurements").read_bytes())
    kept = tuple(event for event in log.events
                 if event.pcr_index != 0 or event.event_type == EventType.EV_NO_ACTION)
    values = replayed_pcrs(replace(log, events=kept), "sha256", (0, 16))
    assert values == {0: bytes(31) + b"\x03", 16: bytes(32)}
