"""The reference-values loader: a round trip, and a FormatError naming the field for every
malformed file."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from cvm.errors import FormatError, UsageError
from cvm.image.bundle import BuiltImage
from cvm.image.reference_values import ImageReferenceValues, loads, parse

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = document
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return mutate


def _drop(path: str) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = document
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        del target[last]
    return mutate


# (mutation, the field the error must name)
MUTATIONS: list[tuple[str, Mutation, str]] = [
    ("wrong schema", _set("schema", "other"), "schema"),
    ("newer version", _set("version", 2), "version"),
    ("version as text", _set("version", "1"), "version"),
    ("unknown top field", _set("extra", 1), "extra"),
    ("missing pcrs", _drop("pcrs"), "pcrs"),
    ("unknown chain", _set("chain", "grub"), "chain"),
    ("launch not a list", _set("launch", {}), "launch"),
    ("unknown mode", _set("launch/0/mode", "tdx"), "launch[0].mode"),
    ("short digest", _set("launch/0/digest", "00" * 10), "launch[0].digest"),
    ("digest not hex", _set("launch/0/digest", "zz" * 32), "launch[0].digest"),
    ("zero vcpus", _set("launch/0/vcpus", 0), "launch[0].vcpus"),
    ("vcpus as bool", _set("launch/0/vcpus", True), "launch[0].vcpus"),
    ("svsm flag for sev", _set("launch/0/svsm", True), "launch[0].svsm"),
    ("signature not hex", _set("launch/0/vcpu_signature", "milan"), "launch[0].vcpu_signature"),
    ("extra launch field", _set("launch/0/id_block", "x"), "launch[0].id_block"),
    ("vmpl 4", _set("snp/vmpl", 4), "snp.vmpl"),
    ("debug as text", _set("snp/allow_debug", "no"), "snp.allow_debug"),
    ("policy not hex", _set("snp/guest_policy", "x"), "snp.guest_policy"),
    ("unknown bank", _set("pcrs/md5", {}), "pcrs.md5"),
    ("pcr 24", _set("pcrs/sha256/24", "00" * 32), "pcrs.sha256.24"),
    ("pcr value of the wrong size", _set("pcrs/sha256/7", "00" * 20), "pcrs.sha256.7"),
    ("event log not base64", _set("event_log", "!!"), "event_log"),
    ("event log not a log", _set("event_log", base64.b64encode(b"junk").decode()), "event_log"),
    ("stage hash short", _set("boot_stages/0/sha256", "00"), "boot_stages[0].sha256"),
    ("stage signer unknown", _set("boot_stages/0/signer", "host"), "boot_stages[0].signer"),
    ("token policy unknown", _set("sealing/0/policy", "none"), "sealing[0].policy"),
    ("token pcrs unsorted", _set("sealing/0/pcrs", [7, 4]), "sealing[0].pcrs"),
    ("token bank sha1", _set("sealing/0/bank", "sha1"), "sealing[0].bank"),
    ("not_checked entry empty", _set("not_checked/0", ""), "not_checked[0]"),
    ("65 vcpus", _set("launch/0/vcpus", 65), "launch[0].vcpus"),
    ("pcr 24 in a token", _set("sealing/0/pcrs", [7, 24]), r"sealing[0].pcrs[1]"),
    ("no banks", _set("pcrs", {}), "pcrs"),
    ("event log with a stray character", lambda d: d.update(event_log="*" + d["event_log"]),
     "event_log"),
    ("token number 32", _set("sealing/0/token", 32), "sealing[0].token"),
    ("keyslot 32", _set("sealing/0/keyslot", 32), "sealing[0].keyslot"),
]


@pytest.fixture
def document(built_images: dict[str, BuiltImage]) -> dict[str, Any]:
    return dict(json.loads((built_images["uki"].out / "reference-values.json").read_text()))


def test_round_trip(built: BuiltImage) -> None:
    data = (built.out / "reference-values.json").read_bytes()
    parsed = loads(data)
    assert isinstance(parsed, ImageReferenceValues)
    assert parsed.to_bytes() == data


@pytest.mark.parametrize(("name", "mutate", "field"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_malformed_files_are_refused_naming_the_field(
        document: dict[str, Any], name: str, mutate: Mutation, field: str) -> None:
    parse(copy.deepcopy(document))
    broken = copy.deepcopy(document)
    mutate(broken)
    with pytest.raises(FormatError, match=field.replace(".", r"\.").replace("[", r"\[")):
        parse(broken)


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"\xff\xfe", b"null"])
def test_not_json_or_not_an_object(data: bytes) -> None:
    with pytest.raises(FormatError):
        loads(data)


def test_the_edges_that_are_allowed(document: dict[str, Any]) -> None:
    edges = copy.deepcopy(document)
    edges["launch"][0]["vcpus"] = 64
    edges["sealing"][0]["pcrs"] = [0, 23]
    edges["sealing"][0]["token"] = edges["sealing"][0]["keyslot"] = 31
    edges["boot_stages"][0]["signer"] = "vendor"
    parsed = parse(edges)
    assert parsed.launch[0].vcpus == 64 and parsed.sealing[0].pcrs == (0, 23)
    assert parsed.stages[0].signer == "vendor"


def test_snp_reference_for_the_verifier(built_images: dict[str, BuiltImage]) -> None:
    reference = built_images["uki"].reference
    for entry in reference.launch:
        assert reference.launch_digest(entry.mode, entry.vcpus) == entry.digest
    values = reference.snp_reference(1, b"\x01" * 64)
    assert values.measurement == next(e.digest for e in reference.launch if e.mode == "sev-snp")
    assert values.vmpl == 0 and values.allow_debug is False
    assert values.allow_migration_agent is False
    assert values.report_data == b"\x01" * 64
    with pytest.raises(UsageError):
        reference.launch_digest("sev-snp", 2)
