"""ATTESTATION_REPORT (56860 Table 22): real reports, round trips, strictness."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.attestation_report import (
    REPORT_SIZE,
    SIGNED_SIZE,
    AttestationReport,
    tcb_layout_for,
)
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.platform_info import PlatformInfo
from cvm.formats.snp.signer_info import SignerInfo, SigningKey
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion


@pytest.fixture(scope="module")
def real_reports(vectors: Path) -> dict[str, bytes]:
    snp = vectors / "snp"
    return {
        "go-sev-guest": (snp / "go-sev-guest/verify/testdata/attestation.bin").read_bytes(),
        "virtee": bytes.fromhex(
            (snp / "virtee-sev/tests/certs_data/report_milan.hex").read_text().strip()
        ),
    }


def test_real_reports_parse_and_round_trip(real_reports: dict[str, bytes]) -> None:
    for data in real_reports.values():
        report = AttestationReport.from_bytes(data)
        assert report.to_bytes() == data
        assert report.signed_bytes() == data[:SIGNED_SIZE]


def test_real_report_fields_match_provenance(real_reports: dict[str, bytes]) -> None:
    report = AttestationReport.from_bytes(real_reports["virtee"])
    assert report.version == 2
    assert report.policy == GuestPolicy(smt=True)
    assert report.measurement.hex().startswith("7a1e5c266c0108dbc9bb94fa")
    assert report.current_tcb == TcbVersion(boot_loader=3, tee=0, snp=8, microcode=115)
    assert report.reported_tcb.to_int() == 0x7308000000000003
    assert (report.current_major, report.current_minor, report.current_build) == (1, 52, 4)
    assert report.platform_info == PlatformInfo(smt_en=True)
    assert report.signer_info == SignerInfo()
    assert report.report_id_ma == b"\xff" * 32
    other = AttestationReport.from_bytes(real_reports["go-sev-guest"])
    assert other.policy.debug and other.policy.smt
    assert other.report_data[:5] == bytes([1, 2, 3, 4, 5])
    assert other.chip_id.hex().startswith("3ac3fe21")


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (0x000, 1),
        (0x000, 6),
        (0x04C, 1),
        (0x031, 1),
        (0x030, 4),
        (0x048, 0x20),
        (0x048, 0x08),
        (0x00A, 0x04),
        (0x00F, 0x01),
        (0x040, 0x40),
        (0x1EB, 1),
        (0x1EF, 1),
        (0x188, 1),
        (0x1F8, 1),
        (0x208, 1),
        (0x330, 1),
        (0x49F, 1),
        (0x03A, 1),
    ],
)
def test_reserved_and_unknown_values_are_refused(
    real_reports: dict[str, bytes], offset: int, value: int
) -> None:
    data = bytearray(real_reports["virtee"])
    if offset == 0x00A:
        data[0x00A] &= ~0x02  # clear the must-be-one bit 17 of the policy
    else:
        data[offset] = value  # the version, a reserved range or a strict field
    with pytest.raises(FormatError):
        AttestationReport.from_bytes(bytes(data))


def test_wrong_size_is_a_format_error(real_reports: dict[str, bytes]) -> None:
    with pytest.raises(FormatError):
        AttestationReport.from_bytes(real_reports["virtee"][:-1])
    with pytest.raises(FormatError):
        AttestationReport.from_bytes(real_reports["virtee"] + b"\x00")


def test_constructor_refuses_inconsistent_values() -> None:
    with pytest.raises(UsageError):
        AttestationReport(version=2, cpuid_fam_id=0x19)
    with pytest.raises(UsageError):
        AttestationReport(version=3, launch_mit_vector=1)
    with pytest.raises(UsageError):
        AttestationReport(measurement=bytes(47))
    with pytest.raises(UsageError):
        AttestationReport(vmpl=4)


def test_tcb_layout_detection() -> None:
    chip = bytes(range(1, 65))
    turin_chip = bytes(range(1, 9)) + bytes(56)
    assert tcb_layout_for(3, 0x19, chip) is TcbLayout.MILAN_GENOA
    assert tcb_layout_for(3, 0x1A, chip) is TcbLayout.TURIN
    assert tcb_layout_for(2, 0, chip) is TcbLayout.MILAN_GENOA
    assert tcb_layout_for(2, 0, turin_chip) is TcbLayout.TURIN
    assert tcb_layout_for(5, 0, turin_chip) is TcbLayout.TURIN


def _tcb(layout: TcbLayout) -> st.SearchStrategy[TcbVersion]:
    byte = st.integers(0, 255)
    fmc = byte if layout is TcbLayout.TURIN else st.just(0)
    return st.builds(
        TcbVersion,
        boot_loader=byte,
        tee=byte,
        snp=byte,
        microcode=byte,
        fmc=fmc,
        layout=st.just(layout),
    )


@st.composite
def reports(draw: st.DrawFn) -> AttestationReport:
    version = draw(st.sampled_from([2, 3, 4, 5]))
    fam = draw(st.sampled_from([0x19, 0x1A])) if version >= 3 else 0
    if draw(st.booleans()):
        chip_id = draw(st.binary(min_size=8, max_size=8)) + bytes(56)
    else:
        chip_id = draw(st.binary(min_size=64, max_size=64))
    layout = tcb_layout_for(version, fam, chip_id)
    policy = GuestPolicy.from_int(draw(st.integers(0, (1 << 26) - 1)) | (1 << 17))
    platform = PlatformInfo.from_int(draw(st.integers(0, 0xFF)) & ~0x40)
    signer = SignerInfo(
        draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from(list(SigningKey)))
    )
    u64 = st.integers(0, (1 << 64) - 1)

    def blob(size: int) -> bytes:
        return draw(st.binary(min_size=size, max_size=size))

    return AttestationReport(
        version=version,
        guest_svn=draw(st.integers(0, (1 << 32) - 1)),
        policy=policy,
        family_id=blob(16),
        image_id=blob(16),
        vmpl=draw(st.integers(0, 3)),
        signature_algo=draw(st.integers(0, (1 << 32) - 1)),
        current_tcb=draw(_tcb(layout)),
        platform_info=platform,
        signer_info=signer,
        report_data=blob(64),
        measurement=blob(48),
        host_data=blob(32),
        id_key_digest=blob(48),
        author_key_digest=blob(48),
        report_id=blob(32),
        report_id_ma=blob(32),
        reported_tcb=draw(_tcb(layout)),
        cpuid_fam_id=fam,
        cpuid_mod_id=draw(st.integers(0, 255)) if version >= 3 else 0,
        cpuid_step=draw(st.integers(0, 255)) if version >= 3 else 0,
        chip_id=chip_id,
        committed_tcb=draw(_tcb(layout)),
        current_build=draw(st.integers(0, 255)),
        current_minor=draw(st.integers(0, 255)),
        current_major=draw(st.integers(0, 255)),
        committed_build=draw(st.integers(0, 255)),
        committed_minor=draw(st.integers(0, 255)),
        committed_major=draw(st.integers(0, 255)),
        launch_tcb=draw(_tcb(layout)),
        launch_mit_vector=draw(u64) if version == 5 else 0,
        current_mit_vector=draw(u64) if version == 5 else 0,
        signature_r=blob(72),
        signature_s=blob(72),
    )


@settings(max_examples=150, deadline=None)
@given(reports())
def test_round_trip(report: AttestationReport) -> None:
    data = report.to_bytes()
    assert len(data) == REPORT_SIZE
    assert AttestationReport.from_bytes(data) == report
    assert AttestationReport.from_bytes(data).to_bytes() == data


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    try:
        report = AttestationReport.from_bytes(data)
    except FormatError:
        return
    assert report.to_bytes() == data


def test_json_view_names_every_field(real_reports: dict[str, bytes]) -> None:
    report = AttestationReport.from_bytes(real_reports["go-sev-guest"])
    view = report.to_json()
    assert view["measurement"] == report.measurement.hex()
    assert view["current_tcb"] == {
        "raw": "0x4405000000000002",
        "boot_loader": 2,
        "tee": 0,
        "snp": 5,
        "microcode": 68,
    }
    policy = view["policy"]
    assert isinstance(policy, dict) and policy["debug"] is True
