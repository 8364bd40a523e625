"""The Spec ID Event03 header (PFP 1.05 r23 Table 21) one check at a time: the bytes written,
each refusal of the reader and its message (which names the field and its offset), the limits
of the dataclass, the vendorInfo a non-conforming log writes after the header record, and the
digest size a record's bank is read with."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, TruncatedError, UsageError
from cvm.formats.tcg.spec_id_event import (
    SPEC_ID_FIXED_SIZE,
    SPEC_ID_SIGNATURE,
    AlgorithmSize,
    SpecIdEvent,
)

TWO_BANKS = (AlgorithmSize(0x000B, 32), AlgorithmSize(0x0004, 20))


def _raw(*, signature: bytes = SPEC_ID_SIGNATURE, uintn: int = 2,
         algorithms: tuple[tuple[int, int], ...] = ((0x000B, 32), (0x0004, 20)),
         count: int | None = None, vendor: bytes = b"", vendor_size: int | None = None) -> bytes:
    """A TCG_EfiSpecIDEvent written by hand, field by field."""
    data = signature + (7).to_bytes(4, "little") + bytes([1, 2, 3, uintn])
    data += (len(algorithms) if count is None else count).to_bytes(4, "little")
    for alg_id, size in algorithms:
        data += alg_id.to_bytes(2, "little") + size.to_bytes(2, "little")
    return data + bytes([len(vendor) if vendor_size is None else vendor_size]) + vendor


def _refused(data: bytes, message: str, kind: type[FormatError] = FormatError) -> None:
    with pytest.raises(kind) as caught:
        SpecIdEvent.parse(data)
    assert str(caught.value) == message


def test_the_bytes_written_field_by_field() -> None:
    spec = SpecIdEvent(TWO_BANKS, platform_class=7, spec_version_minor=1, spec_version_major=2,
                       spec_errata=3, uintn_size=2, vendor_info=b"vend")
    assert spec.to_bytes() == _raw(vendor=b"vend")
    assert SpecIdEvent.parse(spec.to_bytes()) == spec
    # The defaults: PC Client class 0, version 2.0 errata 0, 64-bit UEFI, no vendorInfo.
    default = SpecIdEvent((AlgorithmSize(0x000B, 32),))
    assert default.to_bytes() == (SPEC_ID_SIGNATURE + bytes(4) + bytes([0, 2, 0, 2])
                                  + b"\x01\0\0\0" + b"\x0b\x00\x20\x00" + b"\x00")
    assert len(default.to_bytes()) == SPEC_ID_FIXED_SIZE + 4 + 4 + 1


def test_a_header_read_back_keeps_every_field() -> None:
    spec = SpecIdEvent.parse(_raw(uintn=1, vendor=b"\xff" * 255))
    assert spec.algorithms == TWO_BANKS
    assert (spec.platform_class, spec.spec_version_minor, spec.spec_version_major,
            spec.spec_errata, spec.uintn_size) == (7, 1, 2, 3, 1)
    assert spec.vendor_info == b"\xff" * 255 and not spec.vendor_info_outside_event


def test_the_signature_must_be_spec_id_event03() -> None:
    _refused(_raw(signature=b"Spec ID Event00\0"),
             "TCG_EfiSpecIDEvent: signature is not 'Spec ID Event03'")
    _refused(b"Spec ID", "TCG_EfiSpecIDEvent: signature needs 16 bytes at offset 0x0, "
                         "only 7 left", TruncatedError)


@pytest.mark.parametrize(("cut", "field", "size"), [
    (16, "platformClass", 4), (19, "platformClass", 4), (20, "specVersionMinor", 1),
    (21, "specVersionMajor", 1), (22, "specErrata", 1), (23, "uintnSize", 1),
    (24, "numberOfAlgorithms", 4), (27, "numberOfAlgorithms", 4),
])
def test_a_header_cut_inside_a_fixed_field_names_it(cut: int, field: str, size: int) -> None:
    at = 16 if field == "platformClass" else 24 if field == "numberOfAlgorithms" else cut
    _refused(_raw()[:cut], f"TCG_EfiSpecIDEvent: {field} needs {size} bytes at offset "
                           f"{at:#x}, only {cut - at} left", TruncatedError)


def test_a_header_cut_after_the_algorithms_names_the_vendor_fields() -> None:
    whole = _raw(vendor=b"abc")
    table_end = SPEC_ID_FIXED_SIZE + 4 + 8
    _refused(whole[:table_end], "TCG_EfiSpecIDEvent: vendorInfoSize needs 1 bytes at offset "
                                f"{table_end:#x}, only 0 left", TruncatedError)
    _refused(whole[:-1], "TCG_EfiSpecIDEvent: vendorInfo needs 3 bytes at offset "
                         f"{table_end + 1:#x}, only 2 left", TruncatedError)


@pytest.mark.parametrize("uintn", [0, 3, 8, 0xFF])
def test_uintn_size_is_1_or_2(uintn: int) -> None:
    _refused(_raw(uintn=uintn), f"TCG_EfiSpecIDEvent: uintnSize {uintn} is neither 1 nor 2")


@pytest.mark.parametrize("uintn", [1, 2])
def test_both_uintn_sizes_are_read(uintn: int) -> None:
    assert SpecIdEvent.parse(_raw(uintn=uintn)).uintn_size == uintn


def test_the_number_of_algorithms_must_fit_the_event() -> None:
    _refused(_raw(algorithms=(), count=0),
             "TCG_EfiSpecIDEvent: numberOfAlgorithms 0 does not fit")
    # Two entries announced, one present (and the vendorInfoSize byte): 8 > 5.
    _refused(_raw(algorithms=((0x000B, 32),), count=2),
             "TCG_EfiSpecIDEvent: numberOfAlgorithms 2 does not fit")
    _refused(_raw(count=0xFFFFFFFF),
             "TCG_EfiSpecIDEvent: numberOfAlgorithms 4294967295 does not fit")
    # Exactly the entries and no vendorInfoSize byte: the count fits, the next field is cut.
    no_vendor_size = _raw(algorithms=((0x000B, 32),))[:-1]
    _refused(no_vendor_size, "TCG_EfiSpecIDEvent: vendorInfoSize needs 1 bytes at offset "
                             "0x20, only 0 left", TruncatedError)


def test_five_banks_with_no_vendor_info_fit() -> None:
    five = ((0x0004, 20), (0x000B, 32), (0x000C, 48), (0x000D, 64), (0x0012, 32))
    spec = SpecIdEvent.parse(_raw(algorithms=five))
    assert [(a.alg_id, a.digest_size) for a in spec.algorithms] == list(five)


@pytest.mark.parametrize(("alg_id", "size"), [
    (0x000B, 20), (0x000B, 0), (0x0004, 32), (0x000C, 32), (0x000D, 48), (0x0012, 20),
    (0x0099, 0),
])
def test_a_digest_size_that_is_wrong_for_its_algorithm_is_refused(alg_id: int,
                                                                  size: int) -> None:
    _refused(_raw(algorithms=((alg_id, size),)),
             f"TCG_EfiSpecIDEvent: digestSize {size} is wrong for algorithm {alg_id:#06x}")


def test_an_algorithm_cvm_does_not_know_keeps_its_declared_size() -> None:
    spec = SpecIdEvent.parse(_raw(algorithms=((0x0099, 7), (0x000B, 32))))
    assert spec.algorithms == (AlgorithmSize(0x0099, 7), AlgorithmSize(0x000B, 32))
    assert spec.digest_size(0x0099) == 7


def test_an_algorithm_listed_twice_is_a_format_error() -> None:
    _refused(_raw(algorithms=((0x000B, 32), (0x000B, 32))),
             "Spec ID event: algorithm listed twice in [11, 11]")


def test_bytes_after_the_vendor_info_are_refused() -> None:
    data = _raw(vendor=b"ab") + b"\0"
    _refused(data, f"TCG_EfiSpecIDEvent: 1 unexpected trailing bytes at offset "
                   f"{len(data) - 1:#x}")


def test_the_dataclass_limits() -> None:
    with pytest.raises(UsageError) as caught:
        SpecIdEvent(())
    assert str(caught.value) == "Spec ID event: at least one algorithm is required"
    with pytest.raises(UsageError) as caught:
        SpecIdEvent((AlgorithmSize(4, 20), AlgorithmSize(11, 32), AlgorithmSize(4, 20)))
    assert str(caught.value) == "Spec ID event: algorithm listed twice in [4, 11, 4]"
    with pytest.raises(UsageError) as caught:
        SpecIdEvent(TWO_BANKS, vendor_info=bytes(256))
    assert str(caught.value) == "Spec ID event: vendorInfo is longer than 255 bytes"
    assert len(SpecIdEvent(TWO_BANKS, vendor_info=bytes(255)).vendor_info) == 255


def test_vendor_info_written_after_the_record() -> None:
    inside = SpecIdEvent(TWO_BANKS, vendor_info=b"VEND")
    outside = SpecIdEvent(TWO_BANKS, vendor_info=b"VEND", vendor_info_outside_event=True)
    assert inside.trailing_bytes() == b""
    assert outside.trailing_bytes() == b"VEND"
    # The event ends at vendorInfoSize, which still counts the bytes written after it.
    assert outside.to_bytes() == inside.to_bytes()[:-4]
    assert outside.to_bytes()[-1] == 4


def test_vendor_info_overrun_counts_what_the_event_announces_but_lacks() -> None:
    outside = SpecIdEvent(TWO_BANKS, vendor_info=b"VEND", vendor_info_outside_event=True)
    event = outside.to_bytes()
    assert SpecIdEvent.vendor_info_overrun(event) == 4
    # An event holding its vendorInfo, or one byte longer or shorter, does not overrun.
    assert SpecIdEvent.vendor_info_overrun(SpecIdEvent(TWO_BANKS, vendor_info=b"V").to_bytes()) == 0
    assert SpecIdEvent.vendor_info_overrun(event + b"\0") == 0
    assert SpecIdEvent.vendor_info_overrun(event[:-1]) == 0
    # An event too short to hold numberOfAlgorithms does not overrun.
    assert SpecIdEvent.vendor_info_overrun(event[: SPEC_ID_FIXED_SIZE + 3]) == 0
    # No algorithms: the event ends at vendorInfoSize right after the count.
    empty = _raw(algorithms=(), vendor_size=9)
    assert len(empty) == SPEC_ID_FIXED_SIZE + 5
    assert SpecIdEvent.vendor_info_overrun(empty) == 9
    # The count is little-endian: three entries, not 0x03000000.
    three = _raw(algorithms=((4, 20), (11, 32), (12, 48)), vendor_size=2)
    assert SpecIdEvent.vendor_info_overrun(three) == 2


def test_the_digest_size_of_a_bank() -> None:
    spec = SpecIdEvent(TWO_BANKS)
    assert spec.digest_size(0x000B) == 32
    assert spec.digest_size(0x0004) == 20
    with pytest.raises(FormatError) as caught:
        spec.digest_size(0x000C)
    assert str(caught.value) == "event record uses algorithm 0x000c the Spec ID event omits"
