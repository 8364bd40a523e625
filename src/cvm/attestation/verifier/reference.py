"""Reference values as a document the owner writes or ``cvm image build`` emits
(``cvm-reference/1``), where every check is either given a value or named as not checked.

::

    {
      "version": "cvm-reference/1",
      "measurement": ["<hex launch digest>", ...],
      "pcrs": {"sha256": {"4": "<hex>", "7": "<hex>", ...}},
      "boot_images": ["<hex Authenticode SHA-256>", ...],
      "minimum_tcb": {"boot_loader": 4, "tee": 0, "snp": 22, "microcode": 213},
      "vmpl": 0,
      "guest_policy": {"allow_debug": false, "allow_migration_agent": false,
                       "require_no_smt": false, "require_single_socket": false},
      "host_data": "<hex>", "id_key_digest": "<hex>", "author_key_digest": "<hex>",
      "family_id": "<hex>", "image_id": "<hex>", "chip_id": ["<hex>", ...],
      "minimum_guest_svn": 1, "minimum_firmware": "1.55",
      "event_log": "<base64 reference event log: used to explain PCR differences>",
      "unchecked": ["host_data", "chip_id", ...]
    }

Every name of :data:`CHECKS` must appear either as a key or in ``unchecked`` — a reference that
forgets one is refused, so "not checked" is always a decision someone wrote down.
``boot_images`` is an event-log claim: every image the firmware loaded (PCR 4,
EV_EFI_BOOT_SERVICES_APPLICATION) must have one of these Authenticode digests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cvm.attestation.verifier.policy import ReferenceValues
from cvm.errors import FormatError
from cvm.formats.kbs.json_fields import as_object, b64decode, load_object
from cvm.formats.snp.tcb_version import COMPONENTS, TcbVersion

REFERENCE_VERSION = "cvm-reference/1"
CHECKS = (
    "measurement", "pcrs", "boot_images", "minimum_tcb", "vmpl", "guest_policy", "host_data",
    "id_key_digest", "author_key_digest", "family_id", "image_id", "chip_id",
    "minimum_guest_svn", "minimum_firmware",
)
_HEX_SIZES = {"host_data": 32, "id_key_digest": 48, "author_key_digest": 48, "family_id": 16,
              "image_id": 16, "chip_id": 64, "measurement": 48}
_POLICY_FLAGS = ("allow_debug", "allow_migration_agent", "require_no_smt",
                 "require_single_socket")


def _hex(value: object, where: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"{where}: expected a hex string")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise FormatError(f"{where}: not hex") from None
    if size is not None and len(data) != size:
        raise FormatError(f"{where}: {len(data)} bytes, expected {size}")
    return data


def _hex_list(value: object, where: str, size: int | None) -> tuple[bytes, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise FormatError(f"{where}: an empty list accepts nothing; list it in unchecked")
    return tuple(_hex(item, f"{where}[{i}]", size) for i, item in enumerate(items))


def _int(value: object, where: str, top: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise FormatError(f"{where}: expected an integer 0..{top}")
    return value


@dataclass(frozen=True)
class ReferenceDocument:
    """The parsed document: report reference values, PCRs, event-log claims, what is unchecked."""

    report: ReferenceValues
    pcrs: dict[int, bytes] | None
    boot_images: tuple[bytes, ...] | None
    unchecked: tuple[str, ...]
    reference_log: bytes | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, value: object) -> ReferenceDocument:
        doc = as_object(value, "reference")
        if doc.get("version") != REFERENCE_VERSION:
            raise FormatError(f"reference.version: expected {REFERENCE_VERSION!r}")
        unchecked_raw = doc.get("unchecked", [])
        if not isinstance(unchecked_raw, list) or not all(
                isinstance(item, str) for item in unchecked_raw):
            raise FormatError("reference.unchecked: expected a list of check names")
        unknown = sorted(set(unchecked_raw) - set(CHECKS))
        if unknown:
            raise FormatError(f"reference.unchecked: unknown check {', '.join(unknown)}")
        extra = sorted(set(doc) - set(CHECKS) - {"version", "unchecked", "event_log"})
        if extra:
            raise FormatError(f"reference: unknown field {', '.join(extra)}")
        both = sorted(set(unchecked_raw) & set(doc))
        if both:
            raise FormatError(f"reference: {', '.join(both)} both given and listed unchecked")
        silent = [name for name in CHECKS if name not in doc and name not in unchecked_raw]
        if silent:
            raise FormatError(
                "reference: say what is checked and what is not — give a value for, or list "
                f"in \"unchecked\": {', '.join(silent)}")
        exact: dict[str, Any] = {name: _hex(doc[name], f"reference.{name}", size)
                 for name, size in _HEX_SIZES.items()
                 if name in doc and name not in ("measurement", "chip_id")}
        policy = as_object(doc.get("guest_policy", {}), "reference.guest_policy")
        unknown_flags = sorted(set(policy) - set(_POLICY_FLAGS))
        if unknown_flags:
            raise FormatError(f"reference.guest_policy: unknown {', '.join(unknown_flags)}")
        flags: dict[str, Any] = {}
        for name in _POLICY_FLAGS:
            flag = policy.get(name, False)
            if not isinstance(flag, bool):
                raise FormatError(f"reference.guest_policy.{name}: expected true or false")
            flags[name] = flag
        report = ReferenceValues(
            measurement=(_hex_list(doc["measurement"], "reference.measurement", 48)
                         if "measurement" in doc else None),
            chip_id=(_hex_list(doc["chip_id"], "reference.chip_id", 64)  # type: ignore[arg-type]
                     if "chip_id" in doc else None),  # a tuple: one of several chips
            vmpl=_int(doc["vmpl"], "reference.vmpl", 3) if "vmpl" in doc else None,
            minimum_tcb=_tcb(doc["minimum_tcb"]) if "minimum_tcb" in doc else None,
            minimum_guest_svn=(_int(doc["minimum_guest_svn"], "reference.minimum_guest_svn",
                                    0xFFFFFFFF) if "minimum_guest_svn" in doc else None),
            minimum_firmware=(_firmware(doc["minimum_firmware"]) if "minimum_firmware" in doc
                              else None),
            **exact,
            **flags,
        )
        pcrs = _pcrs(doc["pcrs"]) if "pcrs" in doc else None
        images = (_hex_list(doc["boot_images"], "reference.boot_images", 32)
                  if "boot_images" in doc else None)
        log = doc.get("event_log")
        return cls(report, pcrs, images, tuple(name for name in CHECKS if name in unchecked_raw),
                   None if log is None else b64decode(log, "reference.event_log"), doc)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceDocument:
        return cls.from_json(load_object(data, "reference"))


def _tcb(value: object) -> TcbVersion:
    tcb = as_object(value, "reference.minimum_tcb")
    unknown = sorted(set(tcb) - set(COMPONENTS))
    if unknown:
        raise FormatError(f"reference.minimum_tcb: unknown component {', '.join(unknown)}")
    values = {name: _int(tcb.get(name, 0), f"reference.minimum_tcb.{name}", 0xFF)
              for name in COMPONENTS}
    return TcbVersion(boot_loader=values["boot_loader"], tee=values["tee"], snp=values["snp"],
                      microcode=values["microcode"], fmc=values["fmc"])


def _firmware(value: object) -> tuple[int, int]:
    if not isinstance(value, str) or value.count(".") != 1:
        raise FormatError("reference.minimum_firmware: expected \"MAJOR.MINOR\"")
    major, minor = value.split(".")
    if not (major.isdigit() and minor.isdigit()):
        raise FormatError("reference.minimum_firmware: expected \"MAJOR.MINOR\"")
    return _int(int(major), "reference.minimum_firmware", 0xFF), _int(
        int(minor), "reference.minimum_firmware", 0xFF)


def _pcrs(value: object) -> dict[int, bytes]:
    banks = as_object(value, "reference.pcrs")
    if set(banks) != {"sha256"}:
        raise FormatError("reference.pcrs: expected exactly the \"sha256\" bank")
    values = as_object(banks["sha256"], "reference.pcrs.sha256")
    if not values:
        raise FormatError("reference.pcrs.sha256: empty; list \"pcrs\" in unchecked instead")
    out = {}
    for key, digest in values.items():
        if not key.isdigit() or not 0 <= int(key) <= 23:
            raise FormatError(f"reference.pcrs.sha256: {key!r} is not a PCR index 0..23")
        out[int(key)] = _hex(digest, f"reference.pcrs.sha256.{key}", 32)
    return out
