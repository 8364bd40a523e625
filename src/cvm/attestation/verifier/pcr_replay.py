"""Replay: does the TCG event log reproduce the PCRs the vTPM quoted?

The quote carries ``pcrDigest = H(PCR[i] ‖ PCR[j] ‖ ...)`` over its selection, in ascending
order (TPM 2.0 Part 3 section 18.4). Replaying the log (TCG PC Client PFP 1.05, section 10.4)
gives every PCR it extends; a PCR it never touches holds its initial value. If the digest of
the replayed selection equals the quoted digest, every event of the log for those PCRs is what
the TPM measured, and claims about the log's events are as good as the quote.
"""

from __future__ import annotations

import hashlib

from cvm.errors import FormatError
from cvm.formats.tcg.algorithm import algorithm_by_name
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.replay import initial_value, replay, startup_locality
from cvm.formats.tpm2.attest import QuoteAttest


def replayed_pcrs(log: EventLog, bank: str, pcrs: tuple[int, ...]) -> dict[int, bytes]:
    """The values ``log`` gives the selected PCRs of ``bank``."""
    algorithm = algorithm_by_name(bank)
    values = replay(log, (algorithm.alg_id,)).get(bank)
    if values is None:
        raise FormatError(f"the event log does not carry the {bank} bank")
    locality = startup_locality(log)
    return {pcr: values.get(pcr, initial_value(pcr, algorithm, locality)) for pcr in pcrs}


class ReplayCache:
    """Parsed and replayed logs by their bytes, the last ``size`` of them.

    A fleet booted from one image presents the same event log again and again; parsing and
    replaying are pure functions of the log's bytes and the selection, so their result is kept
    (the bytes themselves are the key: no digest collision to trust). The quote's digest and
    every claim are still checked against it on each appraisal."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: dict[tuple[bytes, str, tuple[int, ...]],
                            tuple[EventLog, dict[int, bytes]]] = {}

    def replay(self, data: bytes, bank: str, pcrs: tuple[int, ...]
               ) -> tuple[EventLog, dict[int, bytes]]:
        """(the parsed log, :func:`replayed_pcrs` of it); FormatError as those raise it."""
        key = (bytes(data), bank, tuple(pcrs))
        found = self._entries.get(key)
        if found is None:
            log = EventLog.parse(data)
            found = (log, replayed_pcrs(log, bank, pcrs))
            while len(self._entries) >= self.size:
                self._entries.pop(next(iter(self._entries)), None)
            self._entries[key] = found
        return found[0], dict(found[1])


def quoted_digest_matches(quote: QuoteAttest, values: dict[int, bytes]) -> tuple[bytes, bool]:
    """(the digest of the replayed values, whether it equals the quoted pcrDigest)."""
    selection = quote.pcr_select.selections[0]
    digest = hashlib.new(selection.bank, b"".join(values[p] for p in selection.pcrs)).digest()
    return digest, digest == quote.pcr_digest
