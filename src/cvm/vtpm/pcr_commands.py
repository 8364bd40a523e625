"""PCR_Read, PCR_Extend, PCR_Event and PCR_Reset.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59: 22.2 (TPM2_PCR_Extend with a
TPML_DIGEST_VALUES, Part 2 Table 107: ``u32 count ‖ {TPMI_ALG_HASH; digest}[count]``), 22.3
(TPM2_PCR_Event: the event data, at most 1024 bytes, is hashed with every bank's algorithm,
each bank extended, and the digests returned), 22.4 (TPM2_PCR_Read: the update counter, the
selection actually read — at most 8 digests, unallocated banks dropped — and the values) and
22.8 (TPM2_PCR_Reset).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cvm.formats.tpm2.constants import TpmCc, digest, digest_size, is_hash_alg
from cvm.formats.tpm2.pcr_selection import PcrSelection, PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, writer
from cvm.vtpm.dispatch import AuthRole, Call, Result, register
from cvm.vtpm.tpm_object import fail
from cvm.wire import Reader

if TYPE_CHECKING:
    from cvm.vtpm.engine import Tpm

MAX_EVENT = 1024
MAX_PCR_READ_DIGESTS = 8
HASH_COUNT = 16


def read_digest_values(source: Reader, number: int) -> list[tuple[int, bytes]]:
    """TPML_DIGEST_VALUES."""
    count = source.u32("count")
    if count > HASH_COUNT:
        raise fail(for_parameter(TpmRc.SIZE, number), "too many digests")
    values = []
    for _ in range(count):
        alg = source.u16("hashAlg")
        if not is_hash_alg(alg):
            raise fail(for_parameter(TpmRc.HASH, number), f"hash {alg:#06x} not supported")
        values.append((alg, source.take(digest_size(alg), "digest")))
    return values


def _pcr_handle(call: Call) -> int:
    handle = call.handles[0]
    if handle >= 24:
        raise fail(for_handle(TpmRc.VALUE, 1), "not a PCR handle")
    return handle


def pcr_extend(tpm: Tpm, call: Call) -> Result:
    values = read_digest_values(call.params, 1)
    call.done()
    pcr = _pcr_handle(call)
    for alg, value in values:
        tpm.pcrs.extend(pcr, alg, value, call.locality)
    return Result()


def pcr_event(tpm: Tpm, call: Call) -> Result:
    data = read_tpm2b(call.params, "eventData", MAX_EVENT)
    call.done()
    pcr = _pcr_handle(call)
    out = writer().u32(len(tpm.pcrs.values))
    for bank in sorted(tpm.pcrs.values):
        value = digest(bank, data)
        tpm.pcrs.extend(pcr, bank, value, call.locality)
        out.u16(bank).put(value)
    return Result(parameters=out.to_bytes())


def pcr_reset(tpm: Tpm, call: Call) -> Result:
    call.done()
    tpm.pcrs.reset(_pcr_handle(call), call.locality)
    return Result()


def pcr_read(tpm: Tpm, call: Call) -> Result:
    selection = PcrSelectionList.read(call.params)
    call.done()
    remaining = MAX_PCR_READ_DIGESTS
    kept: list[PcrSelection] = []
    values: list[bytes] = []
    for entry in selection.selections:
        if entry.hash_alg not in tpm.pcrs.values:
            kept.append(PcrSelection(entry.hash_alg, bytes(len(entry.select))))
            continue
        chosen = []
        for pcr in entry.pcrs:
            if pcr < 24 and remaining:
                chosen.append(pcr)
                values.append(tpm.pcrs.read(entry.hash_alg, pcr))
                remaining -= 1
        kept.append(PcrSelection.of(entry.hash_alg, chosen, len(entry.select)))
    out = writer().u32(tpm.pcrs.update_counter)
    PcrSelectionList(tuple(kept)).write(out)
    out.u32(len(values))
    for value in values:
        put_tpm2b(out, value)
    return Result(parameters=out.to_bytes())


# This module's rows of the command table (Part 3: handles, authorization roles,
# response handles), registered explicitly so each handler stays a plain function.
register(TpmCc.PCR_EXTEND, pcr_extend, handles=1, auth=(AuthRole.USER,))
register(TpmCc.PCR_EVENT, pcr_event, handles=1, auth=(AuthRole.USER,))
register(TpmCc.PCR_RESET, pcr_reset, handles=1, auth=(AuthRole.USER,))
register(TpmCc.PCR_READ, pcr_read)
