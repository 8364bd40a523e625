"""ATTESTATION_REPORT, SIGNER_INFO and PLATFORM_INFO: each refusal and each field, pinned.

These are the checks a verifier and the broker rely on when they read a report the host
handed over: the version, the sizes, the VMPL, the fields only some versions carry, the
reserved bits of SIGNER_INFO and PLATFORM_INFO, and the signed region.
"""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.attestation_report import (
    REPORT_SIZE,
    SIGNED_SIZE,
    AttestationReport,
    layout_for,
    tcb_layout_for,
)
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.platform_info import FLAG_BITS, PlatformInfo
from cvm.formats.snp.signer_info import SignerInfo, SigningKey
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion

# -- AttestationReport: the constructor ---------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 1}, "ATTESTATION_REPORT: unsupported version 1"),
        ({"version": 6}, "ATTESTATION_REPORT: unsupported version 6"),
        ({"measurement": bytes(47)}, "ATTESTATION_REPORT.measurement: expected 48 bytes"),
        ({"chip_id": bytes(65)}, "ATTESTATION_REPORT.chip_id: expected 64 bytes"),
        ({"report_data": "00" * 64}, "ATTESTATION_REPORT.report_data: expected 64 bytes"),
        ({"signature_s": bytes(71)}, "ATTESTATION_REPORT.signature_s: expected 72 bytes"),
        ({"vmpl": 4}, "ATTESTATION_REPORT.vmpl: 4 is not 0..3"),
        ({"vmpl": -1}, "ATTESTATION_REPORT.vmpl: -1 is not 0..3"),
        ({"version": 2, "cpuid_fam_id": 0x19}, "ATTESTATION_REPORT v2 has no CPUID fields"),
        ({"version": 2, "cpuid_mod_id": 1}, "ATTESTATION_REPORT v2 has no CPUID fields"),
        ({"version": 2, "cpuid_step": 1}, "ATTESTATION_REPORT v2 has no CPUID fields"),
        (
            {"version": 4, "launch_mit_vector": 1},
            "ATTESTATION_REPORT: mitigation vectors need version 5",
        ),
        (
            {"version": 4, "current_mit_vector": 1},
            "ATTESTATION_REPORT: mitigation vectors need version 5",
        ),
    ],
)
def test_the_constructor_refuses_each_inconsistent_value_by_name(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        AttestationReport(**changes)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_the_constructor_takes_the_extremes_it_allows() -> None:
    assert AttestationReport(vmpl=3).vmpl == 3
    assert AttestationReport(version=5, launch_mit_vector=1, current_mit_vector=2).version == 5
    assert AttestationReport(version=3, cpuid_fam_id=0x1A, cpuid_step=1).cpuid_step == 1


# -- which TCB layout a report's four TCB fields use ---------------------------------------------


def test_a_version_2_chip_id_is_turin_only_when_exactly_its_first_eight_bytes_are_set() -> None:
    nine = bytes(range(1, 10)) + bytes(55)
    assert tcb_layout_for(2, 0, nine) is TcbLayout.MILAN_GENOA
    only_ninth = bytes(8) + b"\x01" + bytes(55)
    assert tcb_layout_for(2, 0, only_ninth) is TcbLayout.MILAN_GENOA
    assert tcb_layout_for(2, 0, bytes(64)) is TcbLayout.MILAN_GENOA
    last_of_eight = bytes(7) + b"\x01" + bytes(56)
    assert tcb_layout_for(2, 0, last_of_eight) is TcbLayout.TURIN


def test_a_version_3_report_is_laid_out_by_its_cpu_family() -> None:
    chip = bytes(range(1, 65))
    assert tcb_layout_for(3, 0x1B, chip) is TcbLayout.TURIN
    assert tcb_layout_for(4, 0x19, bytes(range(1, 9)) + bytes(56)) is TcbLayout.MILAN_GENOA
    # no family named: the chip ID decides, as for version 2
    assert tcb_layout_for(3, 0, bytes(range(1, 9)) + bytes(56)) is TcbLayout.TURIN
    # version 2 carries no family: a non-zero one is not looked at
    assert tcb_layout_for(2, 0x1A, chip) is TcbLayout.MILAN_GENOA
    report = AttestationReport(version=3, cpuid_fam_id=0x1A)
    assert report.tcb_layout is TcbLayout.TURIN


def test_layout_for_names_an_unknown_version() -> None:
    assert layout_for(4) is layout_for(3)
    assert layout_for(2) is not layout_for(3)
    assert layout_for(5) is not layout_for(3)
    with pytest.raises(FormatError) as caught:
        layout_for(6)
    assert str(caught.value) == "ATTESTATION_REPORT: unsupported version 6 (know 2 to 5)"


# -- parsing -------------------------------------------------------------------------------------


def _report_bytes(**changes: object) -> bytearray:
    return bytearray(AttestationReport(**changes).to_bytes())  # type: ignore[arg-type]


def test_parsing_refuses_a_wrong_size_with_both_sizes() -> None:
    data = bytes(_report_bytes())
    with pytest.raises(FormatError) as caught:
        AttestationReport.from_bytes(data[:-1])
    assert str(caught.value) == "ATTESTATION_REPORT: expected 0x4a0 bytes, got 0x49f"


def test_parsing_refuses_a_vmpl_above_3_and_takes_3() -> None:
    data = _report_bytes()
    data[0x30] = 3
    assert AttestationReport.from_bytes(bytes(data)).vmpl == 3
    data[0x30] = 4
    with pytest.raises(FormatError) as caught:
        AttestationReport.from_bytes(bytes(data))
    assert str(caught.value) == "ATTESTATION_REPORT: VMPL 4 is not 0..3"


def test_parsing_names_the_field_whose_value_is_refused() -> None:
    data = _report_bytes()
    data[0x48] = 0x08  # SIGNING_KEY 2: reserved
    with pytest.raises(FormatError) as caught:
        AttestationReport.from_bytes(bytes(data))
    assert str(caught.value) == (
        "ATTESTATION_REPORT.signer_info: signer info 0x8: reserved SIGNING_KEY 2"
    )
    data = _report_bytes()
    data[0x40] = 0x40
    with pytest.raises(FormatError) as caught:
        AttestationReport.from_bytes(bytes(data))
    assert str(caught.value) == (
        "ATTESTATION_REPORT.platform_info: platform info 0x40: reserved bits 0x40 are set"
    )
    data = _report_bytes()
    data[0x0A] = 0  # policy bit 17 must be one
    with pytest.raises(FormatError) as caught:
        AttestationReport.from_bytes(bytes(data))
    assert str(caught.value).startswith("ATTESTATION_REPORT.policy: ")


def test_parsing_names_the_tcb_field_that_does_not_fit_its_layout() -> None:
    # a Milan/Genoa TCB has reserved bytes 2..5; a Turin one does not
    data = _report_bytes(version=3, cpuid_fam_id=0x19)
    data[0x1F0 + 3] = 1
    with pytest.raises(FormatError) as caught:
        AttestationReport.from_bytes(bytes(data))
    assert str(caught.value).startswith("ATTESTATION_REPORT.launch_tcb: ")
    data = _report_bytes(version=3, cpuid_fam_id=0x19)
    data[0x180 + 3] = 1
    with pytest.raises(FormatError) as caught:
        AttestationReport.from_bytes(bytes(data))
    assert str(caught.value).startswith("ATTESTATION_REPORT.reported_tcb: ")


def test_a_given_tcb_layout_overrides_the_detected_one() -> None:
    turin = TcbVersion(boot_loader=1, tee=2, snp=3, microcode=4, fmc=5, layout=TcbLayout.TURIN)
    data = AttestationReport(version=3, cpuid_fam_id=0x1A, current_tcb=turin).to_bytes()
    assert AttestationReport.from_bytes(data).current_tcb == turin
    forced = AttestationReport.from_bytes(data, TcbLayout.TURIN)
    assert forced.current_tcb.layout is TcbLayout.TURIN
    milan = TcbVersion(boot_loader=1, tee=2, microcode=4)  # byte 6 (SNP) zero: Turin reserved
    plain = AttestationReport(version=3, cpuid_fam_id=0x19, current_tcb=milan).to_bytes()
    assert AttestationReport.from_bytes(plain).current_tcb == milan
    as_turin = AttestationReport.from_bytes(plain, TcbLayout.TURIN)
    assert as_turin.current_tcb.layout is TcbLayout.TURIN
    assert as_turin.current_tcb.to_int() == milan.to_int()
    assert (as_turin.current_tcb.fmc, as_turin.current_tcb.boot_loader) == (1, 2)


def test_a_version_2_report_reads_the_cpuid_bytes_as_reserved() -> None:
    data = _report_bytes(version=2)
    data[0x188] = 0x19
    with pytest.raises(FormatError):
        AttestationReport.from_bytes(bytes(data))
    report = AttestationReport.from_bytes(bytes(_report_bytes(version=3, cpuid_fam_id=0x19)))
    assert report.cpuid_fam_id == 0x19


# -- the signed region and the signature ---------------------------------------------------------


def test_the_signed_region_is_the_first_0x2a0_bytes_of_exactly_a_report() -> None:
    data = bytes(range(256)) * 4 + bytes(REPORT_SIZE - 1024)
    region = AttestationReport.signed_region(data)
    assert region == data[:SIGNED_SIZE] and len(region) == 0x2A0
    assert AttestationReport.signed_region(bytearray(data)) == region
    for size in (REPORT_SIZE - 1, REPORT_SIZE + 1, SIGNED_SIZE):
        with pytest.raises(FormatError) as caught:
            AttestationReport.signed_region(data.ljust(REPORT_SIZE + 1, b"\0")[:size])
        assert str(caught.value) == f"ATTESTATION_REPORT: expected 0x4a0 bytes, got {size:#x}"


def test_with_signature_sets_r_and_s_and_nothing_else() -> None:
    report = AttestationReport(guest_svn=7)
    r, s = b"\x01" * 72, b"\x02" * 72
    signed = report.with_signature(r, s)
    assert (signed.signature_r, signed.signature_s, signed.guest_svn) == (r, s, 7)
    data = signed.to_bytes()
    assert data[0x2A0:0x2E8] == r and data[0x2E8:0x330] == s
    assert signed.signed_bytes() == report.signed_bytes()
    assert report.replace(guest_svn=9).guest_svn == 9
    assert report.replace(guest_svn=9).signature_r == report.signature_r


# -- the JSON view -------------------------------------------------------------------------------


def test_the_json_view_gives_raw_values_and_plain_fields() -> None:
    report = AttestationReport(
        version=3,
        guest_svn=5,
        vmpl=2,
        policy=GuestPolicy(smt=True),
        platform_info=PlatformInfo(smt_en=True, ecc_en=True),
        signer_info=SignerInfo(author_key_en=True, signing_key=SigningKey.VLEK),
        cpuid_fam_id=0x19,
    )
    view = report.to_json()
    assert (view["version"], view["guest_svn"], view["vmpl"], view["cpuid_fam_id"]) == (
        3, 5, 2, 0x19,
    )
    assert view["platform_info"] == {
        "raw": "0x5",
        "smt_en": True,
        "tsme_en": False,
        "ecc_en": True,
        "rapl_dis": False,
        "ciphertext_hiding_dram_en": False,
        "alias_check_complete": False,
        "sev_tio_en": False,
    }
    assert view["signer_info"] == {
        "raw": "0x5",
        "author_key_en": True,
        "mask_chip_key": False,
        "signing_key": SigningKey.VLEK,
    }
    policy = view["policy"]
    assert isinstance(policy, dict) and policy["raw"] == f"{report.policy.to_int():#x}"


# -- SIGNER_INFO ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0x00, SignerInfo()),
        (0x01, SignerInfo(author_key_en=True)),
        (0x02, SignerInfo(mask_chip_key=True)),
        (0x04, SignerInfo(signing_key=SigningKey.VLEK)),
        (0x1C, SignerInfo(signing_key=SigningKey.NONE)),
        (0x1F, SignerInfo(True, True, SigningKey.NONE)),
        (0x07, SignerInfo(True, True, SigningKey.VLEK)),
    ],
)
def test_signer_info_reads_each_bit(value: int, expected: SignerInfo) -> None:
    assert SignerInfo.from_int(value) == expected
    assert expected.to_int() == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "signer info: -1 is not a u32"),
        (1 << 32, "signer info: 4294967296 is not a u32"),
        ((1 << 32) - 1, "signer info 0xffffffff: reserved bits 31:5 are set"),
        (0x20, "signer info 0x20: reserved bits 31:5 are set"),
        (0x08, "signer info 0x8: reserved SIGNING_KEY 2"),
        (0x18, "signer info 0x18: reserved SIGNING_KEY 6"),
        (0x0B, "signer info 0xb: reserved SIGNING_KEY 2"),
    ],
)
def test_signer_info_refuses_reserved_values_by_name(value: int, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        SignerInfo.from_int(value)
    assert str(caught.value) == message


def test_signer_info_takes_only_a_signing_key() -> None:
    with pytest.raises(UsageError) as caught:
        SignerInfo(signing_key=0)  # type: ignore[arg-type]
    assert str(caught.value) == "signer info: 0 is not a SigningKey"


def test_signer_info_text_names_the_key_and_the_flags() -> None:
    assert str(SignerInfo()) == "0x0 (signed by VCEK)"
    assert str(SignerInfo(True, False, SigningKey.VLEK)) == "0x5 (signed by VLEK, author_key_en)"
    assert str(SignerInfo(True, True, SigningKey.NONE)) == (
        "0x1f (signed by NONE, author_key_en,mask_chip_key)"
    )


# -- PLATFORM_INFO -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "bit"), sorted(FLAG_BITS.items()))
def test_platform_info_reads_each_flag_at_its_bit(name: str, bit: int) -> None:
    info = PlatformInfo.from_int(1 << bit)
    assert info.flags() == {flag: flag == name for flag in FLAG_BITS}
    assert info.to_int() == 1 << bit
    assert info.to_bytes() == (1 << bit).to_bytes(8, "little")
    assert PlatformInfo.from_bytes((1 << bit).to_bytes(8, "little")) == info


def test_platform_info_bits_are_the_specification_s() -> None:
    assert FLAG_BITS == {
        "smt_en": 0,
        "tsme_en": 1,
        "ecc_en": 2,
        "rapl_dis": 3,
        "ciphertext_hiding_dram_en": 4,
        "alias_check_complete": 5,
        "sev_tio_en": 7,
    }
    every = PlatformInfo.from_int(0xBF)
    assert all(every.flags().values()) and every.to_int() == 0xBF


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "platform info: -1 is not a u64"),
        (1 << 64, "platform info: 18446744073709551616 is not a u64"),
        (0x40, "platform info 0x40: reserved bits 0x40 are set"),
        (0x1FF, "platform info 0x1ff: reserved bits 0x140 are set"),
        (1 << 63, "platform info 0x8000000000000000: reserved bits 0x8000000000000000 are set"),
    ],
)
def test_platform_info_refuses_reserved_bits_by_name(value: int, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        PlatformInfo.from_int(value)
    assert str(caught.value) == message


def test_platform_info_bytes_are_eight_little_endian() -> None:
    assert PlatformInfo.from_bytes(bytes([0x21]) + bytes(7)) == PlatformInfo(
        smt_en=True, alias_check_complete=True
    )
    for size in (7, 9):
        with pytest.raises(FormatError) as caught:
            PlatformInfo.from_bytes(bytes(size))
        assert str(caught.value) == f"platform info: expected 8 bytes, got {size}"
    with pytest.raises(FormatError):
        PlatformInfo.from_bytes(bytes(7) + b"\x01")


def test_platform_info_takes_only_bools() -> None:
    with pytest.raises(UsageError) as caught:
        PlatformInfo(ecc_en=1)  # type: ignore[arg-type]
    assert str(caught.value) == "platform info ecc_en: expected a bool"
    with pytest.raises(UsageError) as caught:
        PlatformInfo(sev_tio_en=None)  # type: ignore[arg-type]
    assert str(caught.value) == "platform info sev_tio_en: expected a bool"


def test_platform_info_text_names_the_flags_set() -> None:
    assert str(PlatformInfo()) == "0x0 (none)"
    assert str(PlatformInfo(smt_en=True, sev_tio_en=True)) == "0x81 (smt_en,sev_tio_en)"


def test_the_version_is_the_first_four_bytes_only() -> None:
    data = AttestationReport(version=3, guest_svn=0x0403_0201).to_bytes()
    report = AttestationReport.from_bytes(data)
    assert (report.version, report.guest_svn) == (3, 0x0403_0201)
