"""``reference-values.json`` without an image build: the exact document written, the exact
message of each refusal (it names the field, which is how the owner finds it), the edges each
range allows, and what the verifier is handed for one SNP report."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from cvm.errors import FormatError, UsageError
from cvm.image.reference_values import NOT_CHECKED, VERSION, SnpClaims, loads, parse

from . import reference_samples
from .reference_samples import MILAN, sample

EXPECTED_LAUNCH = [
    {"mode": "sev", "vcpus": 2, "vcpu_type": "EPYC-Milan", "vcpu_signature": "0x00a00f11",
     "svsm": False, "digest": "a1" * 32},
    {"mode": "sev-es", "vcpus": 2, "vcpu_type": "EPYC-Milan", "vcpu_signature": "0x00a00f11",
     "svsm": False, "digest": "a2" * 32},
    {"mode": "sev-snp", "vcpus": 2, "vcpu_type": "EPYC-Milan", "vcpu_signature": "0x00a00f11",
     "svsm": True, "digest": "a3" * 48},
    {"mode": "sev-snp", "vcpus": 4, "vcpu_type": "EPYC-Milan", "vcpu_signature": "0x00a00f11",
     "svsm": True, "digest": "a4" * 48},
]


def _document() -> dict[str, Any]:
    return copy.deepcopy(sample().to_json())


def test_the_document_written_is_exactly_the_schema() -> None:
    document = sample().to_json()
    assert document == {
        "schema": "cvm-reference-values",
        "version": 1,
        "chain": "uki",
        "launch": EXPECTED_LAUNCH,
        "snp": {"vmpl": 2, "guest_policy": "0x30000", "allow_debug": False,
                "allow_migration_agent": True},
        "pcrs": {"sha1": {"0": "01" * 20},
                 "sha256": {str(pcr): f"{pcr + 0x40:02x}" * 32
                            for pcr in (0, 4, 7, 11, 14, 23)}},
        "event_log": base64.b64encode(reference_samples.event_log()).decode(),
        "boot_stages": [
            {"name": "uki", "path": "EFI/BOOT/BOOTX64.EFI", "sha256": "51" * 32,
             "authenticode_sha256": "52" * 32, "signer": "db"},
            {"name": "initrd", "path": "", "sha256": "53" * 32, "authenticode_sha256": None,
             "signer": None}],
        "sealing": [
            {"token": 0, "keyslot": 1, "policy": "pcrs", "bank": "sha256", "pcrs": [4, 7, 11],
             "pubkey_pcrs": [], "policy_digest": "61" * 32},
            {"token": 1, "keyslot": 2, "policy": "signed", "bank": "sha256", "pcrs": [7],
             "pubkey_pcrs": [11], "policy_digest": "62" * 32}],
        "not_checked": list(NOT_CHECKED),
    }
    # PCRs are written in ascending order whatever order they were predicted in.
    shuffled = sample(pcrs={"sha256": {11: b"\x0b" * 32, 4: b"\x04" * 32}})
    assert list(shuffled.to_json()["pcrs"]["sha256"]) == ["4", "11"]


def test_the_bytes_are_the_indented_json_and_read_back_equal() -> None:
    reference = sample()
    data = reference.to_bytes()
    assert data == (json.dumps(reference.to_json(), indent=1) + "\n").encode()
    assert loads(data) == reference
    assert reference.version == VERSION == 1 and reference.not_checked == NOT_CHECKED


def test_what_the_file_pins_for_each_launch() -> None:
    reference = sample()
    assert reference.launch_digest("sev", 2) == b"\xa1" * 32
    assert reference.launch_digest("sev-es", 2) == b"\xa2" * 32
    assert reference.launch_digest("sev-snp", 2) == b"\xa3" * 48
    assert reference.launch_digest("sev-snp", 4) == b"\xa4" * 48
    for mode, vcpus in (("sev-snp", 1), ("sev-snp", 3), ("plain", 2)):
        with pytest.raises(UsageError) as refused:
            reference.launch_digest(mode, vcpus)
        assert str(refused.value) == (f"the reference values predict no {mode} launch with "
                                      f"{vcpus} vCPUs")


@pytest.mark.parametrize(("vcpus", "digest"), [(2, b"\xa3" * 48), (4, b"\xa4" * 48)])
def test_the_verifier_gets_the_snp_claims_of_the_file(vcpus: int, digest: bytes) -> None:
    values = sample().snp_reference(vcpus, b"\x07" * 64)
    assert values.measurement == digest and values.report_data == b"\x07" * 64
    assert values.vmpl == 2
    assert values.allow_debug is False and values.allow_migration_agent is True
    permissive = sample(snp=SnpClaims(vmpl=0, allow_debug=True, allow_migration_agent=False))
    values = permissive.snp_reference(vcpus, b"\x07" * 64)
    assert values.vmpl == 0
    assert values.allow_debug is True and values.allow_migration_agent is False
    with pytest.raises(UsageError, match="no sev-snp launch with 3 vCPUs"):
        sample().snp_reference(3, b"\x07" * 64)


def _at(document: dict[str, Any], path: str) -> tuple[Any, str | int]:
    *parents, last = path.split("/")
    target: Any = document
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    return target, int(last) if isinstance(target, list) else last


def _set(path: str, value: Any) -> tuple[str, Any]:
    return path, value


DROP = object()
# (where, new value, the whole message)
REFUSALS: list[tuple[str, Any, str]] = [
    ("schema", "cvm-reference-values2", "schema is not 'cvm-reference-values'"),
    ("version", 2, "version is 2; this cvm reads version 1"),
    ("version", 0, "version is 0; this cvm reads version 1"),
    ("version", True, "version is not an integer in [0, 18446744073709551616)"),
    ("version", -1, "version is not an integer in [0, 18446744073709551616)"),
    ("version", 1 << 64, "version is not an integer in [0, 18446744073709551616)"),
    ("version", "1", "version is not an integer in [0, 18446744073709551616)"),
    ("zeta", 1, "zeta is not a known field"),
    ("alpha", 1, "alpha is not a known field"),
    ("chain", DROP, "chain is missing"),
    ("snp", DROP, "snp is missing"),
    ("chain", "grub", "chain is not one of uki, shim-grub"),
    ("chain", "", "chain is not one of uki, shim-grub"),
    ("chain", 1, "chain is not one of uki, shim-grub"),
    ("launch", {}, "launch is not a list"),
    ("launch/0", [], "launch[0] is not an object"),
    ("launch/1/mode", "plain", "launch[1].mode is not one of sev, sev-es, sev-snp"),
    ("launch/1/id_block", "", "launch[1].id_block is not a known field"),
    ("launch/1/digest", DROP, "launch[1].digest is missing"),
    ("launch/0/digest", "a1" * 31, "launch[0].digest is not 64 hex digits"),
    ("launch/0/digest", "a1" * 48, "launch[0].digest is not 64 hex digits"),
    ("launch/2/digest", "a3" * 32, "launch[2].digest is not 96 hex digits"),
    ("launch/2/digest", "g3" * 48, "launch[2].digest is not 96 hex digits"),
    ("launch/2/digest", 0, "launch[2].digest is not 96 hex digits"),
    ("launch/0/vcpus", 0, "launch[0].vcpus is not an integer in [1, 65)"),
    ("launch/0/vcpus", 65, "launch[0].vcpus is not an integer in [1, 65)"),
    ("launch/0/vcpus", False, "launch[0].vcpus is not an integer in [1, 65)"),
    ("launch/0/vcpus", 2.0, "launch[0].vcpus is not an integer in [1, 65)"),
    ("launch/0/vcpu_type", "", "launch[0].vcpu_type is not a non-empty string"),
    ("launch/0/vcpu_signature", "", "launch[0].vcpu_signature is not a non-empty string"),
    ("launch/0/vcpu_signature", "milan",
     "launch[0].vcpu_signature is not a hexadecimal number"),
    ("launch/0/svsm", True, "launch[0].svsm must be true exactly for sev-snp"),
    ("launch/2/svsm", False, "launch[2].svsm must be true exactly for sev-snp"),
    ("launch/2/svsm", 1, "launch[2].svsm is not true or false"),
    ("snp", [], "snp is not an object"),
    ("snp/vmpl", 4, "snp.vmpl is not an integer in [0, 4)"),
    ("snp/vmpl", -1, "snp.vmpl is not an integer in [0, 4)"),
    ("snp/allow_debug", "false", "snp.allow_debug is not true or false"),
    ("snp/allow_debug", 0, "snp.allow_debug is not true or false"),
    ("snp/allow_migration_agent", None, "snp.allow_migration_agent is not true or false"),
    ("snp/guest_policy", "policy", "snp.guest_policy is not a 64-bit hexadecimal number"),
    ("snp/guest_policy", "-0x1", "snp.guest_policy is not a 64-bit hexadecimal number"),
    ("snp/guest_policy", "0x1" + "0" * 16, "snp.guest_policy is not a 64-bit hexadecimal number"),
    ("snp/guest_policy", 0x30000, "snp.guest_policy is not a non-empty string"),
    ("snp/debug", True, "snp.debug is not a known field"),
    ("pcrs", {}, "pcrs is not an object of banks"),
    ("pcrs", ["sha256"], "pcrs is not an object of banks"),
    ("pcrs/sha384", {}, "pcrs.sha384 is not a known bank (sha1, sha256)"),
    ("pcrs/sha1", [], "pcrs.sha1 is not an object"),
    ("pcrs/sha256/24", "00" * 32, "pcrs.sha256.24 is not a PCR number"),
    ("pcrs/sha256/-1", "00" * 32, "pcrs.sha256.-1 is not a PCR number"),
    ("pcrs/sha256/x", "00" * 32, "pcrs.sha256.x is not a PCR number"),
    ("pcrs/sha256/7", "00" * 20, "pcrs.sha256.7 is not 64 hex digits"),
    ("pcrs/sha1/0", "00" * 32, "pcrs.sha1.0 is not 40 hex digits"),
    ("event_log", "", "event_log is not a non-empty string"),
    ("event_log", "AAA", "event_log is not base64"),
    ("boot_stages", None, "boot_stages is not a list"),
    ("boot_stages/0", "uki", "boot_stages[0] is not an object"),
    ("boot_stages/0/size", 1, "boot_stages[0].size is not a known field"),
    ("boot_stages/1/signer", DROP, "boot_stages[1].signer is missing"),
    ("sealing/0", None, "sealing[0] is not an object"),
    ("sealing/1/pin", False, "sealing[1].pin is not a known field"),
    ("sealing/0/bank", DROP, "sealing[0].bank is missing"),
    ("boot_stages/0/signer", "owner", "boot_stages[0].signer is not one of db, vendor"),
    ("boot_stages/1/path", None, "boot_stages[1].path is not a string"),
    ("boot_stages/1/name", "", "boot_stages[1].name is not a non-empty string"),
    ("boot_stages/0/sha256", "51" * 31, "boot_stages[0].sha256 is not 64 hex digits"),
    ("boot_stages/0/authenticode_sha256", "52" * 48,
     "boot_stages[0].authenticode_sha256 is not 64 hex digits"),
    ("sealing", "none", "sealing is not a list"),
    ("sealing/1/bank", "sha1", "sealing[1].bank is not one of sha256"),
    ("sealing/1/policy", "auth", "sealing[1].policy is not one of pcrs, signed"),
    ("sealing/1/token", 32, "sealing[1].token is not an integer in [0, 32)"),
    ("sealing/1/token", -1, "sealing[1].token is not an integer in [0, 32)"),
    ("sealing/1/keyslot", 32, "sealing[1].keyslot is not an integer in [0, 32)"),
    ("sealing/1/pcrs", "7", "sealing[1].pcrs is not a list of PCR numbers"),
    ("sealing/1/pcrs", [7, 7], "sealing[1].pcrs is not ascending without repeats"),
    ("sealing/1/pcrs", [11, 7], "sealing[1].pcrs is not ascending without repeats"),
    ("sealing/1/pcrs", [7, 24], "sealing[1].pcrs[1] is not an integer in [0, 24)"),
    ("sealing/1/pubkey_pcrs", [-1], "sealing[1].pubkey_pcrs[0] is not an integer in [0, 24)"),
    ("sealing/1/policy_digest", "62" * 20, "sealing[1].policy_digest is not 64 hex digits"),
    ("not_checked", "chip_id", "not_checked is not a list"),
    ("not_checked/1", "", "not_checked[1] is not a non-empty string"),
]


@pytest.mark.parametrize(("where", "value", "message"), REFUSALS,
                         ids=[f"{r[0]}={r[1]!r}"[:60] for r in REFUSALS])
def test_each_refusal_names_the_field(where: str, value: Any, message: str) -> None:
    document = _document()
    parse(copy.deepcopy(document))
    target, key = _at(document, where)
    if value is DROP:
        del target[key]
    else:
        target[key] = value
    with pytest.raises(FormatError) as refused:
        loads(json.dumps(document).encode())
    assert str(refused.value) == f"reference values: {message}"


def test_the_first_unknown_or_missing_field_is_named_in_order() -> None:
    document = _document()
    document["b_unknown"], document["a_unknown"] = 1, 1
    with pytest.raises(FormatError, match=r"^reference values: a_unknown is not a known field$"):
        parse(document)
    document = _document()
    del document["sealing"], document["chain"]
    with pytest.raises(FormatError, match=r"^reference values: chain is missing$"):
        parse(document)
    # An unknown field is named before a missing one.
    document = _document()
    del document["chain"]
    document["zeta"] = 1
    with pytest.raises(FormatError, match=r"^reference values: zeta is not a known field$"):
        parse(document)


def test_a_log_that_is_not_a_tcg_event_log_is_refused_with_the_reason() -> None:
    document = _document()
    document["event_log"] = base64.b64encode(b"\x00" * 8).decode()
    with pytest.raises(FormatError) as refused:
        parse(document)
    assert str(refused.value).startswith("reference values: event_log is not a TCG event log (")
    assert "event log" in str(refused.value).split("(", 1)[1]


def test_a_log_with_a_character_outside_base64_is_refused() -> None:
    document = _document()
    text = document["event_log"]
    document["event_log"] = text[:8] + "*" + text[8:]  # a lenient decoder would skip it
    with pytest.raises(FormatError, match=r"^reference values: event_log is not base64$"):
        parse(document)


@pytest.mark.parametrize("document", [[], None, "reference", 1])
def test_a_document_that_is_not_an_object_is_refused(document: Any) -> None:
    with pytest.raises(FormatError,
                       match=r"^reference values: the file is not a JSON object$"):
        parse(document)


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe"])
def test_bytes_that_are_not_json_are_refused(data: bytes) -> None:
    with pytest.raises(FormatError, match=r"^reference values: not JSON \("):
        loads(data)


def test_the_edges_each_range_allows() -> None:
    document = _document()
    document["launch"][0]["vcpus"] = 1
    document["launch"][1]["vcpus"] = 64
    document["launch"][0]["vcpu_signature"] = "A00F11"
    document["snp"]["vmpl"] = 3
    document["snp"]["guest_policy"] = "0x1f0000"
    document["pcrs"]["sha256"]["23"] = "ff" * 32
    document["pcrs"]["sha1"] = {}
    document["boot_stages"][0]["signer"] = "vendor"
    document["sealing"][0].update(token=31, keyslot=31, pcrs=[0, 23], pubkey_pcrs=[])
    document["sealing"][1].update(token=0, keyslot=0)
    document["not_checked"] = []
    document["launch"][2]["digest"] = "A3" * 48
    parsed = parse(document)
    assert [e.vcpus for e in parsed.launch] == [1, 64, 2, 4]
    assert parsed.launch[0].vcpu_signature == MILAN
    assert parsed.launch[2].digest == b"\xa3" * 48
    assert parsed.snp == SnpClaims(3, 0x1F0000, False, True)
    assert parsed.pcrs["sha256"][23] == b"\xff" * 32 and parsed.pcrs["sha1"] == {}
    assert parsed.stages[0].signer == "vendor" and parsed.stages[1].signer is None
    assert parsed.stages[1].authenticode_sha256 is None and parsed.stages[1].path == ""
    assert (parsed.sealing[0].token, parsed.sealing[0].keyslot) == (31, 31)
    assert parsed.sealing[0].pcrs == (0, 23) and parsed.sealing[0].pubkey_pcrs == ()
    assert (parsed.sealing[1].token, parsed.sealing[1].keyslot) == (0, 0)
    assert parsed.not_checked == ()
    document["snp"]["guest_policy"] = "0x" + "f" * 16
    assert parse(document).snp.guest_policy == (1 << 64) - 1
    document["snp"]["guest_policy"] = "0x0"
    assert parse(document).snp.guest_policy == 0


def test_a_file_that_lists_a_different_not_checked_keeps_it() -> None:
    document = _document()
    document["not_checked"] = ["chip_id only"]
    assert parse(document).not_checked == ("chip_id only",)
    assert parse(document).to_json()["not_checked"] == ["chip_id only"]
