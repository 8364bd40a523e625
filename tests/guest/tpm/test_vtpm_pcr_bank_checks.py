"""The PCR bank the boot stages measure into when it is the vTPM (:mod:`cvm.guest.tpm.pcr_bank`):
what it sends (one TPM2_PCR_Extend per measurement, one TPM2_PCR_Read per group of up to eight
PCRs), what it counts, and the TPM2_PCR_Read replies it refuses — a reply's digests must be
those of the PCRs asked for, in the bank asked for, one per selected PCR and of the bank's size."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from cvm.crypto.drbg import SeededRandom
from cvm.errors import FormatError, UsageError
from cvm.formats.tpm2.command import Command, Response
from cvm.formats.tpm2.constants import TpmAlg, TpmCc
from cvm.formats.tpm2.pcr_selection import PcrSelection, PcrSelectionList
from cvm.formats.tpm2.tpm2b import tpm2b, writer
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.pcr_bank import VtpmPcrBank
from cvm.vtpm.engine import Tpm

SHA256 = hashlib.sha256


def _tpm() -> Tpm:
    return Tpm(random=SeededRandom(b"vtpm pcr bank"), clock=lambda: 1000.0)


def _bank(transport: Callable[[bytes], bytes], banks: tuple[str, ...] = ("sha256",)
          ) -> VtpmPcrBank:
    client = TpmClient(transport, random=SeededRandom(b"vtpm pcr bank client"))
    client.startup()
    return VtpmPcrBank(client, banks)


def _recording(tpm: Tpm, sent: list[Command]) -> Callable[[bytes], bytes]:
    def transport(command: bytes) -> bytes:
        sent.append(Command.parse(command, 1 if _code(command) == TpmCc.PCR_EXTEND else 0))
        return tpm.execute(command)
    return transport


def _code(command: bytes) -> int:
    return int.from_bytes(command[6:10], "big")


def _pcr_read_reply(selection: PcrSelectionList, digests: list[bytes]) -> bytes:
    body = writer().u32(7)
    selection.write(body)
    body.u32(len(digests))
    params = body.to_bytes() + b"".join(tpm2b(d) for d in digests)
    return Response(0, (), params).to_bytes(False)


def _answering(tpm: Tpm, reply: bytes) -> Callable[[bytes], bytes]:
    """The vTPM, except that every TPM2_PCR_Read gets ``reply``."""
    def transport(command: bytes) -> bytes:
        return reply if _code(command) == TpmCc.PCR_READ else tpm.execute(command)
    return transport


def test_each_extend_is_one_pcr_extend_with_every_digest_and_is_counted() -> None:
    tpm, sent = _tpm(), []
    bank = _bank(_recording(tpm, sent), ("sha1", "sha256"))
    assert bank.extends == 0
    sent.clear()
    first = {"sha256": SHA256(b"one").digest(), "sha1": hashlib.sha1(b"one").digest()}
    bank.extend(9, first)
    assert bank.extends == 1
    bank.extend(9, {"sha256": SHA256(b"two").digest()})
    assert bank.extends == 2
    assert [c.code for c in sent] == [TpmCc.PCR_EXTEND, TpmCc.PCR_EXTEND]
    assert sent[0].handles == (9,)
    assert sent[0].parameters == (b"\x00\x00\x00\x02" + b"\x00\x0b" + first["sha256"]
                                  + b"\x00\x04" + first["sha1"])
    expected = SHA256(SHA256(bytes(32) + first["sha256"]).digest()
                      + SHA256(b"two").digest()).digest()
    assert bank.read(9, "sha256") == expected
    assert bank.read(9, "sha1") == hashlib.sha1(bytes(20) + first["sha1"]).digest()
    assert bank.read(0, "sha256") == bytes(32)
    assert bank.banks == ("sha1", "sha256")


def test_read_gives_the_pcr_asked_for() -> None:
    bank = _bank(_tpm().execute)
    for pcr in (4, 7, 23):
        bank.extend(pcr, {"sha256": SHA256(bytes([pcr])).digest()})
    assert bank.read(7, "sha256") == SHA256(bytes(32) + SHA256(b"\x07").digest()).digest()
    assert bank.read(23, "sha256") == SHA256(bytes(32) + SHA256(b"\x17").digest()).digest()


def test_values_reads_24_pcrs_in_three_groups_of_eight_in_the_sha256_bank_by_default() -> None:
    tpm, sent = _tpm(), []
    bank = _bank(_recording(tpm, sent), ("sha1", "sha256"))
    for pcr in (*range(17), 23):  # PCR 17-22 are not extendable from locality 0
        bank.extend(pcr, {"sha256": SHA256(bytes([pcr])).digest(),
                          "sha1": hashlib.sha1(bytes([pcr])).digest()})
    sent.clear()
    values = bank.values(tuple(reversed(range(24))))
    assert sorted(values) == list(range(24))
    assert values[17] == bytes([0xFF] * 32)
    assert values[23] == SHA256(bytes(32) + SHA256(b"\x17").digest()).digest()
    assert values[3] == SHA256(bytes(32) + SHA256(b"\x03").digest()).digest()
    assert [c.code for c in sent] == [TpmCc.PCR_READ] * 3
    asked = [PcrSelectionList.from_bytes(c.parameters) for c in sent]
    assert asked == [PcrSelectionList.of("sha256", range(16, 24)),
                     PcrSelectionList.of("sha256", range(8, 16)),
                     PcrSelectionList.of("sha256", range(8))]
    assert bank.values((5,), "sha1") == {5: hashlib.sha1(bytes(20) + hashlib.sha1(b"\x05")
                                                        .digest()).digest()}


def test_a_bank_the_vtpm_has_not_allocated_reads_empty_and_read_refuses_it() -> None:
    bank = _bank(_tpm().execute)
    assert bank.values((0, 7), "sha512") == {}
    with pytest.raises(UsageError, match=r"^PCR 7: bank 'sha512' is not allocated in the vTPM$"):
        bank.read(7, "sha512")


def test_a_reply_with_fewer_digests_than_selected_pcrs_is_refused() -> None:
    reply = _pcr_read_reply(PcrSelectionList.of("sha256", [0, 1]), [bytes(32)])
    bank = _bank(_answering(_tpm(), reply))
    with pytest.raises(FormatError, match=r"^TPM2_PCR_Read reply: 1 digest\(s\) for 2 selected "
                                          r"PCR\(s\)$"):
        bank.values((0, 1))
    more = _pcr_read_reply(PcrSelectionList.of("sha256", [0]), [bytes(32), bytes(32)])
    with pytest.raises(FormatError, match=r"^TPM2_PCR_Read reply: 2 digest\(s\) for 1 selected"):
        _bank(_answering(_tpm(), more)).values((0, 1))


def test_a_reply_naming_a_pcr_not_asked_for_is_refused() -> None:
    reply = _pcr_read_reply(PcrSelectionList.of("sha256", [0, 8]), [bytes(32), bytes(32)])
    bank = _bank(_answering(_tpm(), reply))
    with pytest.raises(FormatError, match=r"^TPM2_PCR_Read reply: PCR 8 of bank 0x000b was not "
                                          r"asked for \(SHA256 \[0, 1\]\)$"):
        bank.values((1, 0), "SHA256")


def test_a_reply_in_another_bank_is_refused() -> None:
    selection = PcrSelectionList((PcrSelection.of(TpmAlg.SHA384, [0]),))
    bank = _bank(_answering(_tpm(), _pcr_read_reply(selection, [bytes(32)])))
    with pytest.raises(FormatError, match=r"^TPM2_PCR_Read reply: PCR 0 of bank 0x000c was not "
                                          r"asked for \(sha256 \[0\]\)$"):
        bank.values((0,))
    with pytest.raises(FormatError, match=r"PCR 0 of bank 0x000c was not asked for"):
        bank.read(0, "sha256")


def test_a_digest_of_another_size_is_refused() -> None:
    reply = _pcr_read_reply(PcrSelectionList.of("sha256", [0, 2]), [bytes(32), bytes(20)])
    bank = _bank(_answering(_tpm(), reply))
    with pytest.raises(FormatError, match=r"^TPM2_PCR_Read reply: sha256 PCR 2 is 20 bytes, not "
                                          r"32$"):
        bank.values((0, 2))
