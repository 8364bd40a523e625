"""``TPM2B_PRIVATE ‖ TPM2B_PUBLIC`` against sealed objects swtpm made through ``tpm2_create``
(``tests/vectors/tpm/swtpm``): the halves, the public area's fields as ``tpm2_print`` shows
them, the Name ``tpm2_load`` reported, and every refusal naming the pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.errors import FormatError, TruncatedError
from cvm.formats.tpm2.constants import TpmAlg, TpmaObject
from cvm.formats.tpm2.sealed_blob import SealedBlob

VECTORS = Path(__file__).parents[2] / "vectors" / "tpm" / "swtpm"
WHAT = "TPM2B_PRIVATE ‖ TPM2B_PUBLIC"


def _vector(name: str) -> tuple[bytes, bytes, bytes]:
    private, public, tpm_name = (
        (VECTORS / f"{name}.{part}").read_bytes() for part in ("priv", "pub", "name"))
    return private, public, tpm_name


def _printed(name: str) -> dict[str, str]:
    """``tpm2_print -t TPM2B_PUBLIC``'s fields: ``{"name-alg": "0xb", "name-alg.value": ...}``."""
    fields: dict[str, str] = {}
    key = ""
    for line in (VECTORS / f"{name}.pub.yaml").read_text().splitlines():
        label, _, value = line.strip().partition(":")
        if line.startswith(" "):
            fields[f"{key}.{label}"] = value.strip()
        else:
            key = label
            fields[key] = value.strip()
    return fields


def _flags(names: str) -> int:
    return sum(TpmaObject[name].value for flag in names.split("|")
               for name in TpmaObject.__members__ if name.replace("_", "").lower() == flag)


@pytest.mark.parametrize("name", ["sealed", "policy-pcr7"])
def test_tpm2_creates_output_is_the_private_half_then_the_public_half(name: str) -> None:
    private, public, tpm_name = _vector(name)
    printed = _printed(name)
    blob = SealedBlob.from_bytes(private + public)
    assert blob.private.to_tpm2b() == private
    assert blob.public.to_tpm2b() == public
    assert blob.to_bytes() == private + public
    assert blob.public.type == int(printed["type.raw"], 16) == TpmAlg.KEYEDHASH
    assert blob.public.name_alg == int(printed["name-alg.raw"], 16) == TpmAlg.SHA256
    assert blob.public.parameters.scheme.scheme == int(printed["algorithm.raw"], 16)
    assert blob.public.parameters.scheme.scheme == TpmAlg.NULL
    assert blob.public.attributes == int(printed["attributes.raw"], 16)
    assert blob.public.attributes == _flags(printed["attributes.value"])
    assert blob.public.unique == bytes.fromhex(printed["keyedhash"])
    assert blob.public.auth_policy == bytes.fromhex(printed.get("authorization policy", ""))
    assert blob.public.name() == tpm_name


def test_the_policy_object_holds_the_policy_tpm2_createpolicy_computed() -> None:
    private, public, _ = _vector("policy-pcr7")
    policy = (VECTORS / "pcr7.policy").read_bytes()
    assert SealedBlob.from_bytes(private + public).public.auth_policy == policy


def test_bytes_after_the_public_half_are_refused() -> None:
    private, public, _ = _vector("sealed")
    with pytest.raises(FormatError) as refused:
        SealedBlob.from_bytes(private + public + b"\x00")
    assert str(refused.value) == f"{WHAT}: 1 unexpected trailing bytes at offset 0xc1"


@pytest.mark.parametrize(("cut", "message"), [
    (0, "TPM2B_PRIVATE.size needs 2 bytes at offset 0x0, only 0 left"),
    (100, "TPM2B_PRIVATE needs 143 bytes at offset 0x2, only 98 left"),
    (145, "TPM2B_PUBLIC.size needs 2 bytes at offset 0x91, only 0 left"),
    (146, "TPM2B_PUBLIC.size needs 2 bytes at offset 0x91, only 1 left"),
    (192, "TPM2B_PUBLIC needs 46 bytes at offset 0x93, only 45 left"),
])
def test_a_cut_pair_names_the_half_it_ends_in(cut: int, message: str) -> None:
    private, public, _ = _vector("sealed")
    with pytest.raises(TruncatedError) as refused:
        SealedBlob.from_bytes((private + public)[:cut])
    assert str(refused.value) == f"{WHAT}: {message}"


def test_the_halves_in_the_other_order_are_refused() -> None:
    private, public, _ = _vector("sealed")
    with pytest.raises(FormatError):
        SealedBlob.from_bytes(public + private)
