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


def quoted_digest_matches(quote: QuoteAttest, values: dict[int, bytes]) -> tuple[bytes, bool]:
    """(the digest of the replayed values, whether it equals the quoted pcrDigest)."""
    selection = quote.pcr_select.selections[0]
    digest = hashlib.new(selection.bank, b"".join(values[p] for p in selection.pcrs)).digest()
    return digest, digest == quote.pcr_digest
