"""Replaying an event log into PCR values.

The arithmetic is the TPM's (TPM 2.0 Library Part 1, rev 1.59, section 17.3 "PCR operations":
``PCR_new = H_bank(PCR_old || digest)``) with the initial values of the PC Client PTP
(TCG PC Client Platform TPM Profile 1.05, Table 3): PCR 0-16 and 23 start zero, PCR 17-22
(DRTM) start all 0xFF; PCR 0's last byte is the locality of TPM2_Startup when the firmware
logged a "StartupLocality" EV_NO_ACTION event (PFP 1.05 r23, section 10.4.5.3, Table 24).
EV_NO_ACTION records are never extended (PFP section 10.4.5).
"""

from __future__ import annotations

from cvm.errors import FormatError, UsageError
from cvm.formats.tcg.algorithm import ALGORITHMS_BY_ID, HashAlgorithm
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.no_action import StartupLocalityEvent

PCR_COUNT = 24
DRTM_PCRS = range(17, 23)
HCRTM_PCR = 0


def initial_value(pcr: int, algorithm: HashAlgorithm, startup_locality: int = 0) -> bytes:
    """The value PCR ``pcr`` of a bank has right after TPM2_Startup(CLEAR)."""
    if not 0 <= pcr < PCR_COUNT:
        raise UsageError(f"PCR {pcr} is outside 0..{PCR_COUNT - 1}")
    if not 0 <= startup_locality <= 4:
        raise UsageError(f"startup locality {startup_locality} is outside 0..4")
    if pcr in DRTM_PCRS:
        return b"\xff" * algorithm.digest_size
    if pcr == HCRTM_PCR:
        return bytes(algorithm.digest_size - 1) + bytes([startup_locality])
    return bytes(algorithm.digest_size)


def extend(algorithm: HashAlgorithm, old: bytes, digest: bytes) -> bytes:
    """``H(old || digest)``, the TPM2_PCR_Extend of one bank."""
    if len(old) != algorithm.digest_size or len(digest) != algorithm.digest_size:
        raise UsageError(f"{algorithm.name} extend needs two {algorithm.digest_size}-byte values")
    return algorithm.digest(old + digest)


def startup_locality(log: EventLog) -> int:
    """The locality of the StartupLocality event of ``log``, 0 if it has none."""
    for event in log.events:
        if event.event_type == EventType.EV_NO_ACTION and event.pcr_index == HCRTM_PCR:
            found = StartupLocalityEvent.probe(event.event)
            if found is not None:
                return found.locality
    return 0


def carried_banks(log: EventLog) -> tuple[int, ...]:
    """The banks of the header for which every extending record has a digest."""
    extending = [e for e in log.events if e.event_type != EventType.EV_NO_ACTION]
    return tuple(
        alg for alg in log.bank_ids if all(e.digest(alg) is not None for e in extending)
    )


def replay(log: EventLog, bank_ids: tuple[int, ...] | None = None) -> dict[str, dict[int, bytes]]:
    """The PCR values the log's extends produce, per bank name, for every PCR it touches.

    Without ``bank_ids``, the banks replayed are the known ones every extending record carries
    (a header may announce banks the records then omit). A requested bank some record lacks, or
    a record extending a PCR outside 0..23, is a FormatError.
    """
    locality = startup_locality(log)
    wanted = bank_ids if bank_ids is not None else carried_banks(log)
    algorithms = [ALGORITHMS_BY_ID[a] for a in wanted if a in ALGORITHMS_BY_ID]
    values: dict[str, dict[int, bytes]] = {a.name: {} for a in algorithms}
    hashers = [(a, a.constructor(), values[a.name]) for a in algorithms]
    for number, event in enumerate(log.events, start=1 if log.is_crypto_agile else 0):
        if event.event_type == EventType.EV_NO_ACTION:
            continue
        pcr = event.pcr_index
        if not 0 <= pcr < PCR_COUNT:
            raise FormatError(f"event {number} extends PCR {pcr}, outside 0..23")
        found = dict(event.digests)
        for algorithm, hasher, bank in hashers:
            digest = found.get(algorithm.alg_id)
            if digest is None:
                raise FormatError(f"event {number} has no {algorithm.name} digest")
            old = bank.get(pcr)
            if old is None:
                old = initial_value(pcr, algorithm, locality)
            if len(digest) != algorithm.digest_size:
                raise FormatError(f"event {number}: {algorithm.name} digest has a wrong size")
            bank[pcr] = hasher(old + digest).digest()
    return values
