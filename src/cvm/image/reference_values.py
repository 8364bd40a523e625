"""``reference-values.json``: what a verifier accepts for one image, and its strict loader.

The schema (``cvm-reference-values``, version 1) is documented in docs/reference-values.md:
launch digests per mode and vCPU configuration, the SNP claims, PCR values per bank, the event
log the owner predicts, the Authenticode hash of each boot stage, the sealing policies, and the
explicit list of what is deliberately not checked. :func:`load` refuses anything else with a
FormatError naming the field (``launch[0].digest``, ``pcrs.sha256.7`` ...).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cvm.attestation.verifier.policy import ReferenceValues
from cvm.errors import FormatError, UsageError
from cvm.formats.tcg.event_log import EventLog

SCHEMA = "cvm-reference-values"
VERSION = 1
MODES = ("plain", "sev", "sev-es", "sev-snp")
CHAINS = ("uki", "shim-grub")
DIGEST_SIZES = {"sev": 32, "sev-es": 32, "sev-snp": 48}
BANK_SIZES = {"sha1": 20, "sha256": 32}
POLICIES = ("pcrs", "signed")
NOT_CHECKED = (
    "chip_id: any AMD chip may run the image",
    "reported_tcb, current_tcb, committed_tcb, launch_tcb: the platform's TCB is the relying "
    "party's policy (minimum_tcb), not the image's",
    "host_data, family_id, image_id, id_key_digest, author_key_digest: the image has no ID block",
    "guest_svn, platform_info and the SMT / single-socket / AES-256-XTS flags",
    "PCRs the boot does not extend (10, 12, 13, 15-23) and everything measured after "
    "ExitBootServices (systemd-pcrphase, IMA)",
    "the vTPM's clock, reset and restart counts in quotes",
    "plain mode: nothing is measured at launch; the host's vTPM is trusted as the host is",
)


def _fail(where: str, what: str) -> FormatError:
    return FormatError(f"reference values: {where} {what}")


def _object(value: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "is not an object")
    unknown, missing = sorted(set(value) - keys), sorted(keys - set(value))
    if unknown:
        raise _fail(f"{where}.{unknown[0]}" if where else unknown[0], "is not a known field")
    if missing:
        raise _fail(f"{where}.{missing[0]}" if where else missing[0], "is missing")
    return value


def _int(value: Any, where: str, low: int = 0, high: int = 1 << 64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
        raise _fail(where, f"is not an integer in [{low}, {high})")
    return value


def _str(value: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value or (choices and value not in choices):
        wanted = f"one of {', '.join(choices)}" if choices else "a non-empty string"
        raise _fail(where, f"is not {wanted}")
    return value


def _hex(value: Any, where: str, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size:
        raise _fail(where, f"is not {2 * size} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise _fail(where, f"is not {2 * size} hex digits") from None


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, "is not true or false")
    return value


def _pcr_list(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _fail(where, "is not a list of PCR numbers")
    pcrs = tuple(_int(p, f"{where}[{i}]", 0, 24) for i, p in enumerate(value))
    if list(pcrs) != sorted(set(pcrs)):
        raise _fail(where, "is not ascending without repeats")
    return pcrs


@dataclass(frozen=True)
class LaunchReference:
    """The launch digest of one mode and vCPU configuration."""

    mode: str
    vcpus: int
    vcpu_type: str
    vcpu_signature: int
    svsm: bool
    digest: bytes


@dataclass(frozen=True)
class StageReference:
    """A boot stage: where it lies, its file and Authenticode hashes, who signed it."""

    name: str
    path: str
    sha256: bytes
    authenticode_sha256: bytes | None
    signer: str | None


@dataclass(frozen=True)
class TokenReference:
    """A sealing policy as enrolled in the LUKS2 header."""

    token: int
    keyslot: int
    policy: str
    pcrs: tuple[int, ...]
    pubkey_pcrs: tuple[int, ...]
    policy_digest: bytes


@dataclass(frozen=True)
class SnpClaims:
    """The report fields an SNP launch of this image must carry."""

    vmpl: int = 0
    guest_policy: int = 0x30000
    allow_debug: bool = False
    allow_migration_agent: bool = False


@dataclass(frozen=True)
class ImageReferenceValues:
    """Everything ``reference-values.json`` holds."""

    chain: str
    launch: tuple[LaunchReference, ...]
    snp: SnpClaims
    pcrs: Mapping[str, Mapping[int, bytes]]
    event_log: bytes
    stages: tuple[StageReference, ...]
    sealing: tuple[TokenReference, ...]
    not_checked: tuple[str, ...] = NOT_CHECKED
    version: int = VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    def launch_digest(self, mode: str, vcpus: int) -> bytes:
        """The predicted digest for ``mode`` with ``vcpus`` vCPUs; UsageError if none."""
        for entry in self.launch:
            if entry.mode == mode and entry.vcpus == vcpus:
                return entry.digest
        raise UsageError(f"the reference values predict no {mode} launch with {vcpus} vCPUs")

    def snp_reference(self, vcpus: int, report_data: bytes) -> ReferenceValues:
        """The verifier's reference values for an SNP report of this image."""
        return ReferenceValues(
            measurement=self.launch_digest("sev-snp", vcpus), report_data=report_data,
            vmpl=self.snp.vmpl, allow_debug=self.snp.allow_debug,
            allow_migration_agent=self.snp.allow_migration_agent,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": self.version,
            "chain": self.chain,
            "launch": [{"mode": e.mode, "vcpus": e.vcpus, "vcpu_type": e.vcpu_type,
                        "vcpu_signature": f"{e.vcpu_signature:#010x}", "svsm": e.svsm,
                        "digest": e.digest.hex()} for e in self.launch],
            "snp": {"vmpl": self.snp.vmpl, "guest_policy": f"{self.snp.guest_policy:#x}",
                    "allow_debug": self.snp.allow_debug,
                    "allow_migration_agent": self.snp.allow_migration_agent},
            "pcrs": {bank: {str(pcr): value.hex() for pcr, value in sorted(values.items())}
                     for bank, values in self.pcrs.items()},
            "event_log": base64.b64encode(self.event_log).decode(),
            "boot_stages": [{"name": s.name, "path": s.path, "sha256": s.sha256.hex(),
                             "authenticode_sha256": s.authenticode_sha256.hex()
                             if s.authenticode_sha256 is not None else None,
                             "signer": s.signer} for s in self.stages],
            "sealing": [{"token": t.token, "keyslot": t.keyslot, "policy": t.policy,
                         "bank": "sha256", "pcrs": list(t.pcrs),
                         "pubkey_pcrs": list(t.pubkey_pcrs),
                         "policy_digest": t.policy_digest.hex()} for t in self.sealing],
            "not_checked": list(self.not_checked),
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1) + "\n").encode()


def _launch(value: Any, where: str) -> LaunchReference:
    item = _object(value, where, {"mode", "vcpus", "vcpu_type", "vcpu_signature", "svsm",
                                  "digest"})
    mode = _str(item["mode"], f"{where}.mode", tuple(DIGEST_SIZES))
    signature_text = _str(item["vcpu_signature"], f"{where}.vcpu_signature")
    try:
        signature = int(signature_text, 16)
    except ValueError:
        raise _fail(f"{where}.vcpu_signature", "is not a hexadecimal number") from None
    svsm = _bool(item["svsm"], f"{where}.svsm")
    if svsm != (mode == "sev-snp"):
        raise _fail(f"{where}.svsm", "must be true exactly for sev-snp")
    return LaunchReference(mode, _int(item["vcpus"], f"{where}.vcpus", 1, 65),
                           _str(item["vcpu_type"], f"{where}.vcpu_type"), signature, svsm,
                           _hex(item["digest"], f"{where}.digest", DIGEST_SIZES[mode]))


def _stage(value: Any, where: str) -> StageReference:
    item = _object(value, where, {"name", "path", "sha256", "authenticode_sha256", "signer"})
    authenticode = item["authenticode_sha256"]
    signer = item["signer"]
    if signer is not None:
        _str(signer, f"{where}.signer", ("db", "vendor"))
    path = item["path"]
    if not isinstance(path, str):
        raise _fail(f"{where}.path", "is not a string")
    return StageReference(
        _str(item["name"], f"{where}.name"), path, _hex(item["sha256"], f"{where}.sha256", 32),
        None if authenticode is None else _hex(authenticode, f"{where}.authenticode_sha256",
                                               32),
        signer,
    )


def _token(value: Any, where: str) -> TokenReference:
    item = _object(value, where, {"token", "keyslot", "policy", "bank", "pcrs", "pubkey_pcrs",
                                  "policy_digest"})
    _str(item["bank"], f"{where}.bank", ("sha256",))
    return TokenReference(
        _int(item["token"], f"{where}.token", 0, 32), _int(item["keyslot"], f"{where}.keyslot",
                                                           0, 32),
        _str(item["policy"], f"{where}.policy", POLICIES), _pcr_list(item["pcrs"],
                                                                     f"{where}.pcrs"),
        _pcr_list(item["pubkey_pcrs"], f"{where}.pubkey_pcrs"),
        _hex(item["policy_digest"], f"{where}.policy_digest", 32),
    )


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, "is not a list")
    return value


def parse(document: Any) -> ImageReferenceValues:
    """Validate a decoded ``reference-values.json`` strictly."""
    if not isinstance(document, dict):
        raise FormatError("reference values: the file is not a JSON object")
    top = _object(document, "", {"schema", "version", "chain", "launch", "snp", "pcrs",
                                 "event_log", "boot_stages", "sealing", "not_checked"})
    if top["schema"] != SCHEMA:
        raise _fail("schema", f"is not {SCHEMA!r}")
    if _int(top["version"], "version") != VERSION:
        raise _fail("version", f"is {top['version']}; this cvm reads version {VERSION}")
    snp = _object(top["snp"], "snp", {"vmpl", "guest_policy", "allow_debug",
                                      "allow_migration_agent"})
    policy_text = _str(snp["guest_policy"], "snp.guest_policy")
    try:
        guest_policy = int(policy_text, 16)
        valid = 0 <= guest_policy < 1 << 64
    except ValueError:
        valid = False
    if not valid:
        raise _fail("snp.guest_policy", "is not a 64-bit hexadecimal number")
    claims = SnpClaims(_int(snp["vmpl"], "snp.vmpl", 0, 4), guest_policy,
                       _bool(snp["allow_debug"], "snp.allow_debug"),
                       _bool(snp["allow_migration_agent"], "snp.allow_migration_agent"))
    pcrs_doc = top["pcrs"]
    if not isinstance(pcrs_doc, dict) or not pcrs_doc:
        raise _fail("pcrs", "is not an object of banks")
    pcrs: dict[str, dict[int, bytes]] = {}
    for bank, values in pcrs_doc.items():
        if bank not in BANK_SIZES:
            raise _fail(f"pcrs.{bank}", "is not a known bank (sha1, sha256)")
        if not isinstance(values, dict):
            raise _fail(f"pcrs.{bank}", "is not an object")
        pcrs[bank] = {}
        for key, value in values.items():
            if not key.isdigit() or not 0 <= int(key) < 24:
                raise _fail(f"pcrs.{bank}.{key}", "is not a PCR number")
            pcrs[bank][int(key)] = _hex(value, f"pcrs.{bank}.{key}", BANK_SIZES[bank])
    log_text = _str(top["event_log"], "event_log")
    try:
        log = base64.b64decode(log_text, validate=True)
    except binascii.Error:
        raise _fail("event_log", "is not base64") from None
    try:
        EventLog.parse(log)
    except FormatError as error:
        raise _fail("event_log", f"is not a TCG event log ({error})") from None
    launch = tuple(_launch(v, f"launch[{i}]") for i, v in enumerate(_list(top["launch"],
                                                                           "launch")))
    stages = tuple(_stage(v, f"boot_stages[{i}]")
                   for i, v in enumerate(_list(top["boot_stages"], "boot_stages")))
    sealing = tuple(_token(v, f"sealing[{i}]") for i, v in enumerate(_list(top["sealing"],
                                                                            "sealing")))
    not_checked = tuple(_str(v, f"not_checked[{i}]")
                        for i, v in enumerate(_list(top["not_checked"], "not_checked")))
    return ImageReferenceValues(_str(top["chain"], "chain", CHAINS), launch, claims, pcrs, log,
                                stages, sealing, not_checked)


def loads(data: bytes) -> ImageReferenceValues:
    """Parse the bytes of ``reference-values.json``."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise FormatError(f"reference values: not JSON ({error})") from None
    return parse(document)
