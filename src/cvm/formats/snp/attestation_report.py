"""ATTESTATION_REPORT: the 0x4A0-byte report the AMD Secure Processor signs for a guest.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860),
Table 22 "ATTESTATION_REPORT Structure" (report versions 2 to 5) and its
SIGNATURE structure (ECDSA P-384: R and S as 72-byte little-endian integers).

The signature covers bytes 0x000..0x29F (:meth:`AttestationReport.signed_bytes`). Version 2
has 24 reserved bytes at 0x188; version 3 (and 4, same layout) puts CPUID_FAM_ID,
CPUID_MOD_ID and CPUID_STEP there; version 5 adds LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR
at 0x1F8 and 0x200. Every reserved range must be zero.

The four TCB fields are decoded with the layout of the report's product (see
:mod:`cvm.formats.snp.tcb_version`): version 3+ reports name their CPU family and model;
for version 2 reports a CHIP_ID whose bytes 8..63 are zero means Turin, else Milan/Genoa.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.platform_info import PlatformInfo
from cvm.formats.snp.signer_info import SignerInfo
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion
from cvm.wire import Field, Layout, raw, reserved, u8, u32, u64

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_COMPONENT_SIZE = 72
SUPPORTED_VERSIONS = (2, 3, 4, 5)
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
MAX_VMPL = 3
NO_MIGRATION_AGENT = b"\xff" * 32
# CPUID family (extended + base) of the products; the model picks Milan or Genoa (virtee
# `identify_cpu`, 56860 Table 22 CPUID_FAM_ID).
FAMILY_ZEN3_ZEN4 = 0x19
FAMILY_ZEN5 = 0x1A

_HEAD: list[Field] = [
    u32("version", 0x000),
    u32("guest_svn", 0x004),
    u64("policy", 0x008),
    raw("family_id", 0x010, 16),
    raw("image_id", 0x020, 16),
    u32("vmpl", 0x030),
    u32("signature_algo", 0x034),
    raw("current_tcb", 0x038, 8),
    u64("platform_info", 0x040),
    u32("signer_info", 0x048),
    reserved(0x04C, 4),
    raw("report_data", 0x050, 64),
    raw("measurement", 0x090, 48),
    raw("host_data", 0x0C0, 32),
    raw("id_key_digest", 0x0E0, 48),
    raw("author_key_digest", 0x110, 48),
    raw("report_id", 0x140, 32),
    raw("report_id_ma", 0x160, 32),
    raw("reported_tcb", 0x180, 8),
]
_CPUID: list[Field] = [
    u8("cpuid_fam_id", 0x188),
    u8("cpuid_mod_id", 0x189),
    u8("cpuid_step", 0x18A),
    reserved(0x18B, 21),
]
_MIDDLE: list[Field] = [
    raw("chip_id", 0x1A0, 64),
    raw("committed_tcb", 0x1E0, 8),
    u8("current_build", 0x1E8),
    u8("current_minor", 0x1E9),
    u8("current_major", 0x1EA),
    reserved(0x1EB, 1),
    u8("committed_build", 0x1EC),
    u8("committed_minor", 0x1ED),
    u8("committed_major", 0x1EE),
    reserved(0x1EF, 1),
    raw("launch_tcb", 0x1F0, 8),
]
_SIGNATURE: list[Field] = [
    raw("signature_r", 0x2A0, SIGNATURE_COMPONENT_SIZE),
    raw("signature_s", 0x2E8, SIGNATURE_COMPONENT_SIZE),
    reserved(0x330, 0x170),
]
LAYOUT_V2 = Layout(
    "ATTESTATION_REPORT v2",
    REPORT_SIZE,
    [*_HEAD, reserved(0x188, 24), *_MIDDLE, reserved(0x1F8, 0xA8), *_SIGNATURE],
)
LAYOUT_V3 = Layout(
    "ATTESTATION_REPORT v3/v4",
    REPORT_SIZE,
    [*_HEAD, *_CPUID, *_MIDDLE, reserved(0x1F8, 0xA8), *_SIGNATURE],
)
LAYOUT_V5 = Layout(
    "ATTESTATION_REPORT v5",
    REPORT_SIZE,
    [
        *_HEAD, *_CPUID, *_MIDDLE,
        u64("launch_mit_vector", 0x1F8),
        u64("current_mit_vector", 0x200),
        reserved(0x208, 0x98),
        *_SIGNATURE,
    ],
)
_TCB_FIELDS = ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb")
_BYTE_SIZES = {
    "family_id": 16, "image_id": 16, "report_data": 64, "measurement": 48, "host_data": 32,
    "id_key_digest": 48, "author_key_digest": 48, "report_id": 32, "report_id_ma": 32,
    "chip_id": 64, "signature_r": SIGNATURE_COMPONENT_SIZE,
    "signature_s": SIGNATURE_COMPONENT_SIZE,
}


def layout_for(version: int) -> Layout:
    """The byte layout of a report of ``version`` (56860 Table 22)."""
    if version == 2:
        return LAYOUT_V2
    if version in (3, 4):
        return LAYOUT_V3
    if version == 5:
        return LAYOUT_V5
    raise FormatError(f"ATTESTATION_REPORT: unsupported version {version} (know 2 to 5)")


def tcb_layout_for(version: int, cpuid_fam_id: int, chip_id: bytes) -> TcbLayout:
    """Pick the TCB layout of a report as real verifiers do (virtee ``identify_cpu``)."""
    if version >= 3 and cpuid_fam_id:
        return TcbLayout.TURIN if cpuid_fam_id >= FAMILY_ZEN5 else TcbLayout.MILAN_GENOA
    if any(chip_id[:8]) and not any(chip_id[8:]):
        return TcbLayout.TURIN
    return TcbLayout.MILAN_GENOA


@dataclass(frozen=True)
class AttestationReport:
    """One attestation report (56860 Table 22); ``to_bytes()`` is always 0x4A0 bytes."""

    version: int = 3
    guest_svn: int = 0
    policy: GuestPolicy = field(default_factory=GuestPolicy)
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    vmpl: int = 0
    signature_algo: int = SIGNATURE_ALGO_ECDSA_P384_SHA384
    current_tcb: TcbVersion = field(default_factory=TcbVersion)
    platform_info: PlatformInfo = field(default_factory=PlatformInfo)
    signer_info: SignerInfo = field(default_factory=SignerInfo)
    report_data: bytes = bytes(64)
    measurement: bytes = bytes(48)
    host_data: bytes = bytes(32)
    id_key_digest: bytes = bytes(48)
    author_key_digest: bytes = bytes(48)
    report_id: bytes = bytes(32)
    report_id_ma: bytes = NO_MIGRATION_AGENT
    reported_tcb: TcbVersion = field(default_factory=TcbVersion)
    cpuid_fam_id: int = 0
    cpuid_mod_id: int = 0
    cpuid_step: int = 0
    chip_id: bytes = bytes(64)
    committed_tcb: TcbVersion = field(default_factory=TcbVersion)
    current_build: int = 0
    current_minor: int = 0
    current_major: int = 0
    committed_build: int = 0
    committed_minor: int = 0
    committed_major: int = 0
    launch_tcb: TcbVersion = field(default_factory=TcbVersion)
    launch_mit_vector: int = 0
    current_mit_vector: int = 0
    signature_r: bytes = bytes(SIGNATURE_COMPONENT_SIZE)
    signature_s: bytes = bytes(SIGNATURE_COMPONENT_SIZE)

    def __post_init__(self) -> None:
        if self.version not in SUPPORTED_VERSIONS:
            raise UsageError(f"ATTESTATION_REPORT: unsupported version {self.version}")
        for name, size in _BYTE_SIZES.items():
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                raise UsageError(f"ATTESTATION_REPORT.{name}: expected {size} bytes")
        if not 0 <= self.vmpl <= MAX_VMPL:
            raise UsageError(f"ATTESTATION_REPORT.vmpl: {self.vmpl} is not 0..3")
        if self.version == 2 and (self.cpuid_fam_id or self.cpuid_mod_id or self.cpuid_step):
            raise UsageError("ATTESTATION_REPORT v2 has no CPUID fields")
        if self.version < 5 and (self.launch_mit_vector or self.current_mit_vector):
            raise UsageError("ATTESTATION_REPORT: mitigation vectors need version 5")

    @property
    def tcb_layout(self) -> TcbLayout:
        return tcb_layout_for(self.version, self.cpuid_fam_id, self.chip_id)

    @classmethod
    def from_bytes(
        cls, data: bytes | bytearray | memoryview, tcb_layout: TcbLayout | None = None
    ) -> AttestationReport:
        """Parse exactly 0x4A0 bytes; strict (reserved ranges zero, known values only).

        ``tcb_layout`` overrides the product detection for the TCB fields (a verifier that
        knows the product from the certificate chain passes it).
        """
        data = bytes(data)
        if len(data) != REPORT_SIZE:
            raise FormatError(
                f"ATTESTATION_REPORT: expected {REPORT_SIZE:#x} bytes, got {len(data):#x}"
            )
        version = int.from_bytes(data[0:4], "little")
        values = layout_for(version).unpack(data)
        vmpl = values["vmpl"]
        assert isinstance(vmpl, int)
        if vmpl > MAX_VMPL:
            raise FormatError(f"ATTESTATION_REPORT: VMPL {vmpl} is not 0..3")
        chip_id = values["chip_id"]
        assert isinstance(chip_id, bytes)
        fam = values.get("cpuid_fam_id", 0)
        assert isinstance(fam, int)
        layout = tcb_layout if tcb_layout is not None else tcb_layout_for(version, fam, chip_id)
        decoded: dict[str, object] = dict(values)
        for name in _TCB_FIELDS:
            tcb_bytes = values[name]
            assert isinstance(tcb_bytes, bytes)
            try:
                decoded[name] = TcbVersion.from_bytes(tcb_bytes, layout)
            except FormatError as error:
                raise FormatError(f"ATTESTATION_REPORT.{name}: {error}") from None
        for name, parse in (
            ("policy", GuestPolicy.from_int),
            ("platform_info", PlatformInfo.from_int),
            ("signer_info", SignerInfo.from_int),
        ):
            raw_value = values[name]
            assert isinstance(raw_value, int)
            try:
                decoded[name] = parse(raw_value)
            except FormatError as error:
                raise FormatError(f"ATTESTATION_REPORT.{name}: {error}") from None
        return cls(**decoded)  # type: ignore[arg-type]

    def to_bytes(self) -> bytes:
        layout = layout_for(self.version)
        values: dict[str, int | bytes] = {}
        for item in layout.fields:
            if item.kind == "reserved":
                continue
            value = getattr(self, item.name)
            if isinstance(value, TcbVersion):
                values[item.name] = value.to_bytes()
            elif isinstance(value, GuestPolicy | PlatformInfo | SignerInfo):
                values[item.name] = value.to_int()
            else:
                values[item.name] = value
        return layout.pack(values)

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers: offsets 0x000..0x29F (56860 Table 22)."""
        return self.to_bytes()[:SIGNED_SIZE]

    @staticmethod
    def signed_region(data: bytes | bytearray | memoryview) -> bytes:
        """The signed bytes 0x000..0x29F of a serialised report (checked to be 0x4A0 long)."""
        if len(data) != REPORT_SIZE:
            raise FormatError(
                f"ATTESTATION_REPORT: expected {REPORT_SIZE:#x} bytes, got {len(data):#x}"
            )
        return bytes(data[:SIGNED_SIZE])

    def with_signature(self, r: bytes, s: bytes) -> AttestationReport:
        """This report with SIGNATURE.R and SIGNATURE.S (72-byte little-endian each) set."""
        return dataclasses.replace(self, signature_r=r, signature_s=s)

    def replace(self, **changes: object) -> AttestationReport:
        """A copy with ``changes`` applied (the signature is kept as it is)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        """Every field as JSON-ready values (bytes as hex, TCBs with their components)."""
        out: dict[str, object] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bytes):
                out[item.name] = value.hex()
            elif isinstance(value, TcbVersion):
                out[item.name] = {"raw": f"{value.to_int():#018x}", **value.components()}
            elif isinstance(value, GuestPolicy | PlatformInfo | SignerInfo):
                out[item.name] = {"raw": f"{value.to_int():#x}", **dataclasses.asdict(value)}
            else:
                out[item.name] = value
        return out
