"""Replaying an event log, check by check: each PCR's initial value, the StartupLocality event,
which banks are replayed, and what a record outside the PCRs, without a bank's digest or with
a digest of the wrong size does (its class and message, which names the record)."""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.tcg.algorithm import SHA1, SHA256, SHA384, TPM_ALG_SHA1, TPM_ALG_SHA256
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.no_action import StartupLocalityEvent
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.replay import carried_banks, extend, initial_value, replay, startup_locality
from cvm.formats.tcg.spec_id_event import AlgorithmSize, SpecIdEvent

SPEC = SpecIdEvent((AlgorithmSize(TPM_ALG_SHA1, 20), AlgorithmSize(TPM_ALG_SHA256, 32)))
NO_ACTION = EventType.EV_NO_ACTION
POST_CODE = EventType.EV_POST_CODE


def _both(pcr: int, seed: bytes, kind: int = POST_CODE) -> PcrEvent:
    return PcrEvent(pcr, kind, ((TPM_ALG_SHA1, hashlib.sha1(seed).digest()),
                                (TPM_ALG_SHA256, hashlib.sha256(seed).digest())), seed)


def _sha256_only(pcr: int, seed: bytes) -> PcrEvent:
    return PcrEvent(pcr, POST_CODE, ((TPM_ALG_SHA256, hashlib.sha256(seed).digest()),), seed)


def _locality(value: int, pcr: int = 0, kind: int = NO_ACTION) -> PcrEvent:
    return PcrEvent(pcr, kind, ((TPM_ALG_SHA1, bytes(20)), (TPM_ALG_SHA256, bytes(32))),
                    StartupLocalityEvent(value).to_bytes())


def _chain(alg: str, start: bytes, *seeds: bytes) -> bytes:
    value = start
    for seed in seeds:
        value = hashlib.new(alg, value + hashlib.new(alg, seed).digest()).digest()
    return value


# --- initial values and extend --------------------------------------------------------------

def test_the_initial_values_of_the_pc_client_profile() -> None:
    for pcr in range(24):
        expected = b"\xff" * 32 if 17 <= pcr <= 22 else bytes(32)
        assert initial_value(pcr, SHA256) == expected
    assert initial_value(0, SHA384, 3) == bytes(47) + b"\x03"
    assert initial_value(0, SHA1, 4) == bytes(19) + b"\x04"
    assert initial_value(1, SHA256, 3) == bytes(32)
    assert initial_value(17, SHA1, 3) == b"\xff" * 20
    assert initial_value(23, SHA256, 4) == bytes(32)


@pytest.mark.parametrize("pcr", [-1, 24, 100])
def test_a_pcr_outside_the_24_is_refused(pcr: int) -> None:
    with pytest.raises(UsageError) as caught:
        initial_value(pcr, SHA256)
    assert str(caught.value) == f"PCR {pcr} is outside 0..23"


@pytest.mark.parametrize("locality", [-1, 5])
def test_a_startup_locality_outside_0_to_4_is_refused(locality: int) -> None:
    with pytest.raises(UsageError) as caught:
        initial_value(5, SHA256, locality)
    assert str(caught.value) == f"startup locality {locality} is outside 0..4"


def test_extend_is_the_hash_of_old_and_digest() -> None:
    old, digest = bytes(range(32)), bytes(range(32, 64))
    assert extend(SHA256, old, digest) == hashlib.sha256(old + digest).digest()
    for wrong in ((old[:31], digest), (old, digest + b"x"), (old[:20], digest[:20])):
        with pytest.raises(UsageError) as caught:
            extend(SHA256, *wrong)
        assert str(caught.value) == "sha256 extend needs two 32-byte values"


# --- the StartupLocality event --------------------------------------------------------------

def test_the_startup_locality_comes_from_pcr_0s_no_action_event() -> None:
    assert startup_locality(EventLog(SPEC, ())) == 0
    assert startup_locality(EventLog(SPEC, (_both(0, b"a"), _locality(3)))) == 3
    assert startup_locality(EventLog(SPEC, (_locality(3, pcr=1),))) == 0
    assert startup_locality(EventLog(SPEC, (_locality(3, kind=POST_CODE),))) == 0
    other = PcrEvent(0, NO_ACTION, ((TPM_ALG_SHA1, bytes(20)), (TPM_ALG_SHA256, bytes(32))),
                     b"SP800-155 Event\0")
    assert startup_locality(EventLog(SPEC, (other, _locality(4), _locality(3)))) == 4


def test_the_startup_locality_sets_pcr_0_only() -> None:
    log = EventLog(SPEC, (_locality(3), _both(0, b"a"), _both(1, b"b")))
    values = replay(log, (TPM_ALG_SHA256,))["sha256"]
    assert values[0] == _chain("sha256", bytes(31) + b"\x03", b"a")
    assert values[1] == _chain("sha256", bytes(32), b"b")


# --- which banks ----------------------------------------------------------------------------

def test_the_banks_every_extending_record_carries_in_header_order() -> None:
    assert carried_banks(EventLog(SPEC, (_both(0, b"a"),))) == (TPM_ALG_SHA1, TPM_ALG_SHA256)
    assert carried_banks(EventLog(SPEC, ())) == (TPM_ALG_SHA1, TPM_ALG_SHA256)
    lacking = EventLog(SPEC, (_both(0, b"a"), _sha256_only(1, b"b")))
    assert carried_banks(lacking) == (TPM_ALG_SHA256,)
    # A no-action record without a bank does not take the bank away.
    quiet = PcrEvent(0, NO_ACTION, ((TPM_ALG_SHA256, bytes(32)),), b"x")
    assert carried_banks(EventLog(SPEC, (quiet, _both(0, b"a")))) == (
        TPM_ALG_SHA1, TPM_ALG_SHA256)
    reversed_spec = SpecIdEvent((AlgorithmSize(TPM_ALG_SHA256, 32), AlgorithmSize(4, 20)))
    assert carried_banks(EventLog(reversed_spec, (_both(0, b"a"),))) == (
        TPM_ALG_SHA256, TPM_ALG_SHA1)


def test_replay_without_banks_replays_the_carried_ones() -> None:
    lacking = EventLog(SPEC, (_both(0, b"a"), _sha256_only(0, b"b")))
    assert replay(lacking) == {"sha256": {0: _chain("sha256", bytes(32), b"a", b"b")}}
    full = EventLog(SPEC, (_both(0, b"a"),))
    assert replay(full) == {"sha1": {0: _chain("sha1", bytes(20), b"a")},
                            "sha256": {0: _chain("sha256", bytes(32), b"a")}}


def test_a_requested_bank_a_record_lacks_names_the_record() -> None:
    lacking = EventLog(SPEC, (_locality(0), _sha256_only(0, b"a"), _both(0, b"b"),
                              _sha256_only(3, b"c")))
    with pytest.raises(FormatError) as caught:
        replay(lacking, (TPM_ALG_SHA1,))
    assert str(caught.value) == "event 2 has no sha1 digest"


def test_an_unknown_requested_bank_is_left_out() -> None:
    assert replay(EventLog(SPEC, (_both(0, b"a"),)), (0x0099,)) == {}


# --- the records ----------------------------------------------------------------------------

def test_each_pcr_starts_from_its_initial_value_and_no_action_is_not_extended() -> None:
    log = EventLog(SPEC, (_both(17, b"drtm"), _both(7, b"x"), _both(7, b"y"),
                          _both(7, b"z", NO_ACTION), _both(23, b"app")))
    values = replay(log, (TPM_ALG_SHA256, TPM_ALG_SHA1))
    assert values["sha256"] == {
        17: _chain("sha256", b"\xff" * 32, b"drtm"),
        7: _chain("sha256", bytes(32), b"x", b"y"),
        23: _chain("sha256", bytes(32), b"app"),
    }
    assert values["sha1"][7] == _chain("sha1", bytes(20), b"x", b"y")
    assert list(values) == ["sha256", "sha1"]


@pytest.mark.parametrize("pcr", [24, 0xFFFFFFFF])
def test_a_record_extending_a_pcr_outside_0_to_23_is_refused(pcr: int) -> None:
    log = EventLog(SPEC, (_both(23, b"a"), _both(pcr, b"b")))
    with pytest.raises(FormatError) as caught:
        replay(log)
    assert str(caught.value) == f"event 2 extends PCR {pcr}, outside 0..23"
    # A legacy log numbers its records from 0 (it has no header record).
    legacy = EventLog(None, (PcrEvent(pcr, POST_CODE, ((TPM_ALG_SHA1, bytes(20)),), b""),))
    with pytest.raises(FormatError) as caught:
        replay(legacy)
    assert str(caught.value) == f"event 0 extends PCR {pcr}, outside 0..23"


@pytest.mark.parametrize("size", [31, 33, 20])
def test_a_digest_of_the_wrong_size_is_refused(size: int) -> None:
    bad = PcrEvent(4, POST_CODE, ((TPM_ALG_SHA1, bytes(20)), (TPM_ALG_SHA256, bytes(size))), b"")
    with pytest.raises(FormatError) as caught:
        replay(EventLog(SPEC, (_both(4, b"a"), bad)), (TPM_ALG_SHA256,))
    assert str(caught.value) == "event 2: sha256 digest has a wrong size"
    # The first record of a PCR is checked as well.
    with pytest.raises(FormatError, match="event 1: sha256 digest has a wrong size"):
        replay(EventLog(SPEC, (bad,)), (TPM_ALG_SHA256,))


def test_a_legacy_log_replays_sha1() -> None:
    seed = hashlib.sha1(b"a").digest()
    legacy = EventLog(None, (PcrEvent(0, POST_CODE, ((TPM_ALG_SHA1, seed),), b"a"),))
    assert replay(legacy) == {"sha1": {0: _chain("sha1", bytes(20), b"a")}}
