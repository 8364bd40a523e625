"""The error tree's own logic: a finding's sentence, the findings and status code an error
carries, and the exit code of each class (the table in ``cvm.errors``)."""

from __future__ import annotations

import re

import pytest

from cvm import errors
from cvm.errors import Finding, PolicyError, StatusError


def test_a_finding_reads_claim_expected_actual_and_its_hint() -> None:
    assert str(Finding("measurement", "aa", "bb")) == "measurement differs: expected aa, got bb"
    assert str(Finding("measurement", "aa", "bb", "the kernel changed")) == (
        "measurement differs: expected aa, got bb; the kernel changed")


def test_a_policy_error_keeps_its_message_and_findings() -> None:
    finding = Finding("debug", "false", "true")
    error = PolicyError("not acceptable", (finding,))
    assert (str(error), error.findings) == ("not acceptable", (finding,))
    assert PolicyError("no findings").findings == ()


def test_a_status_error_keeps_its_message_and_code() -> None:
    error = StatusError("LAUNCH_START failed", 0x0C)
    assert (str(error), error.code) == ("LAUNCH_START failed", 0x0C)


def test_the_exit_codes_are_the_documented_table() -> None:
    table = dict(re.findall(r"^(\w+Error) +(\d+) ", errors.__doc__ or "", re.M))
    assert {name: getattr(errors, name).exit_code for name in table} == {
        name: int(code) for name, code in table.items()}
    assert len(table) == 8


@pytest.mark.parametrize(("name", "code"), [
    ("CvmError", 1), ("TruncatedError", 65), ("OversizeError", 65), ("SignatureError", 66),
    ("ChainError", 66), ("IntegrityError", 66), ("WrongKeyError", 2)])
def test_the_undocumented_classes_inherit_or_name_their_exit_code(name: str, code: int) -> None:
    assert getattr(errors, name).exit_code == code


def test_a_format_error_is_also_a_value_error() -> None:
    assert issubclass(errors.FormatError, ValueError)
    assert issubclass(errors.TruncatedError, errors.FormatError)
