"""The TPM 2.0 constants against a real TPM: the algorithms, commands and curves swtpm lists
through ``tpm2_getcap`` and the object attributes ``tpm2_print`` names (recorded in
``tests/vectors/tpm/swtpm``), each with the value cvm gives the same name, and the hash
algorithms' digest sizes against :mod:`hashlib`."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from cvm.formats.tpm2.constants import (
    TPMA_OBJECT_RESERVED,
    TpmAlg,
    TpmaObject,
    TpmCc,
    TpmEccCurve,
    digest_size,
    hash_alg,
    hash_name,
    is_hash_alg,
)

VECTORS = Path(__file__).parents[2] / "vectors" / "tpm" / "swtpm"


def _key(name: str) -> str:
    """A name as both spell it: ``NV_UndefineSpaceSpecial`` and ``NV_UNDEFINE_SPACE_SPECIAL``."""
    return name.replace("_", "").upper()


def _listed(file: str, pattern: str) -> dict[str, int]:
    text = (VECTORS / file).read_text()
    found = {_key(name): int(value, 16) for name, value in re.findall(pattern, text, re.M)}
    assert found, file
    return found


ALGORITHMS = _listed("getcap-algorithms.yaml", r"^(\w+):\n  value:\s+(0x[0-9A-Fa-f]+)$")
COMMANDS = _listed("getcap-commands.yaml", r"^TPM2_CC_(\w+):\n(?:  .*\n)*?  commandIndex: (0x\w+)$")
CURVES = _listed("getcap-ecc-curves.yaml", r"^TPM2_ECC_(\w+): (0x[0-9A-Fa-f]+)$")


@pytest.mark.parametrize("alg", [alg for alg in TpmAlg if alg is not TpmAlg.NULL])
def test_each_algorithm_has_the_value_swtpm_lists_under_its_name(alg: TpmAlg) -> None:
    assert ALGORITHMS[_key(alg.name)] == alg


def test_null_is_the_value_tpm2_print_shows_for_a_null_scheme() -> None:
    # GetCapability lists no TPM_ALG_NULL; tpm2_print names it in a sealed object's scheme.
    printed = (VECTORS / "sealed.pub.yaml").read_text()
    assert re.search(r"^algorithm: \n  value: null\n  raw: (0x\w+)$", printed, re.M)[1] == hex(
        TpmAlg.NULL)


@pytest.mark.parametrize("command", list(TpmCc))
def test_each_command_code_is_the_one_swtpm_implements_under_its_name(command: TpmCc) -> None:
    assert COMMANDS[_key(command.name)] == command


@pytest.mark.parametrize("curve", [curve for curve in TpmEccCurve if curve != TpmEccCurve.NONE])
def test_each_curve_has_the_value_swtpm_lists_under_its_name(curve: TpmEccCurve) -> None:
    assert CURVES[_key(curve.name)] == curve


@pytest.mark.parametrize("name", ["sha1", "sha256", "sha384", "sha512"])
def test_each_hash_swtpm_lists_maps_to_hashlib_and_back(name: str) -> None:
    value = ALGORITHMS[_key(name)]
    assert is_hash_alg(value)
    assert hash_name(value) == name
    assert hash_alg(name) == value
    assert digest_size(value) == hashlib.new(name).digest_size


def test_no_other_algorithm_swtpm_lists_is_taken_for_a_hash() -> None:
    hashes = {ALGORITHMS[_key(name)] for name in ("sha1", "sha256", "sha384", "sha512")}
    for value in set(ALGORITHMS.values()) - hashes:
        assert not is_hash_alg(value), hex(value)


# tpm2-tools 5.4 names TPMA_OBJECT bits as Part 2 revision 1.38 did: "sign" for sign/encrypt, and
# bit 19 reserved, which revision 1.59 Table 31 gives to x509sign.
PRINTED_BITS = dict(
    line.split(" ", 1) for line in (VECTORS / "tpma-object-bits.txt").read_text().splitlines())


def test_each_object_attribute_is_the_bit_tpm2_print_names_it() -> None:
    for flag in TpmaObject:
        bit = flag.value.bit_length() - 1
        assert flag.value == 1 << bit
        printed = PRINTED_BITS[str(bit)]
        if flag is TpmaObject.X509_SIGN:
            assert printed == "<reserved(19)>"
        elif flag is TpmaObject.SIGN_ENCRYPT:
            assert printed == "sign"
        else:
            assert printed == _key(flag.name).lower()


def test_the_reserved_object_attributes_are_every_bit_no_attribute_names() -> None:
    reserved = {int(bit) for bit, printed in PRINTED_BITS.items() if printed.startswith("<")}
    assert len(PRINTED_BITS) == 32
    assert sum(1 << bit for bit in reserved - {19}) == TPMA_OBJECT_RESERVED
