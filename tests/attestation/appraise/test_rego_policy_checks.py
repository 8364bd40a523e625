"""A Rego policy is refused when it is loaded, in one line that says what is wrong and where:
a syntax error with its line and column, another package, a function that does not exist;
regopy's own report never reaches the process's output."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from cvm.attestation.verifier import rego_policy
from cvm.attestation.verifier.rego_policy import (
    DEFAULT_POLICY,
    EMPTY_INPUT,
    PolicyDecision,
    RegoPolicy,
    error_line,
)
from cvm.errors import FormatError

HEADER = "package cvm.policy\nimport rego.v1\n"


@pytest.mark.parametrize(("source", "message"), [
    (HEADER + "allow if { input.x == }\n",
     "does not compile: Invalid boolean operator at line 3, column 20"),
    ("package cvm.policy\n# café éé\nallow if {",  # the column counts characters, not bytes
     "does not compile: this is unclosed at line 3, column 10; "
     "this is unclosed at line 1, column 1"),
    ("", "does not compile: Invalid file at line 1, column 1"),
    ("garbage", "defines nothing in package cvm.policy"),
    ("package other\nimport rego.v1\nallow := true\n", "defines nothing in package cvm.policy"),
    (HEADER + "allow if { undefined_fn(1) }\n", "failed: Function not found: undefined_fn"),
    (HEADER + "deny := 1\nallow := true\n", ": deny must be a set"),
    # run on an input of the documented shape: its claims present (a null input has none)
    (HEADER + "deny := 1 if input.claims\nallow := true\n", ": deny must be a set"),
])
def test_a_bad_policy_is_refused_when_loaded_in_one_line(
        capfd: pytest.CaptureFixture[str], source: str, message: str) -> None:
    with pytest.raises(FormatError) as refused:
        RegoPolicy(source, "owner.rego")
    separator = "" if message.startswith(":") else " "
    assert str(refused.value) == f"policy 'owner.rego'{separator}{message}"
    assert capfd.readouterr() == ("", "")  # regopy's multi-line report is not printed


def test_a_policy_that_loads_is_evaluated_on_each_input() -> None:
    """The check at load time runs the policy on an empty input; it decides nothing after."""
    policy = RegoPolicy(HEADER + 'default allow := false\nallow if input.claims.vmpl == 0\n')
    assert policy.evaluate(EMPTY_INPUT) == PolicyDecision(False, ())
    assert policy.evaluate({**EMPTY_INPUT, "claims": {"vmpl": 0}}) == PolicyDecision(True, ())
    assert RegoPolicy(DEFAULT_POLICY).evaluate(EMPTY_INPUT) == PolicyDecision(True, ())


def test_each_error_of_the_report_with_its_place() -> None:
    source = "ab\ncdé\nxyz\n"  # byte 8 is "x": line 3, column 1; byte 7 the "\\n" after "é"
    report = ("(rego-errorseq\n  (error 11:policy.rego|8|1\n    (errormsg 5:first)\n"
              "    (errorast |8|1))\n  (error 11:policy.rego|7|1\n    (errormsg 13:second\n"
              "  line)\n    (errorast |7|1)))\n")
    assert error_line(report, source) == (
        "first at line 3, column 1; second line at line 2, column 4")
    assert error_line("(error\n  (errormsg 9:not found)\n  (errorast))", source) == "not found"
    assert error_line("(error 1:p|0|1 (errormsg 3:one", "x") == "one at line 1, column 1"
    assert error_line("(error 1:p|1|1 (errormsg 3:one", "\nx") == "one at line 2, column 1"
    assert error_line("(error 1:p|2|1 (errormsg 3:one", "a\n") == "one at line 2, column 1"
    # an offset inside a character (regopy's never is) still gives a place, not a traceback
    assert error_line("(error 1:p|2|1 (errormsg 3:one", "aé") == "one at line 1, column 3"


@pytest.mark.parametrize("report", [
    "the report\n  of another   shape\n",
    "(error 11:policy.rego|0|1 (errormsg 3:one) (errormsg 3:two))",  # a message without place
])
def test_a_report_of_another_shape_is_folded_onto_one_line(report: str) -> None:
    assert error_line(report, "x") == " ".join(report.split())


def test_a_policy_is_compiled_once_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading compiles it; each evaluation after reuses the thread's compiled policy (the
    broker's throughput rests on it); another thread compiles its own."""
    made: list[int] = []

    class Counted(rego_policy.Interpreter):  # type: ignore[misc]
        def __init__(self, *args: Any) -> None:
            made.append(threading.get_ident())
            super().__init__(*args)

    monkeypatch.setattr(rego_policy, "Interpreter", Counted)
    policy = RegoPolicy()
    for _ in range(3):
        assert policy.evaluate(EMPTY_INPUT).allow
    assert made == [threading.get_ident()]
    other = threading.Thread(target=lambda: [policy.evaluate(EMPTY_INPUT) for _ in range(2)])
    other.start()
    other.join()
    assert len(made) == 2 and made[1] != made[0]


@pytest.mark.parametrize(("output", "message"), [
    ("(error\n  (errormsg 4:boom)\n  (rego-errorcode))", "failed: boom"),
    ('{"result": \n 1}', 'failed: {"result": 1}'),
    ('{"expressions": []}', 'failed: {"expressions": []}'),
])
def test_an_output_that_is_not_a_result_is_the_policys_failure(
        monkeypatch: pytest.MonkeyPatch, output: str, message: str) -> None:
    """What regopy returns for a run that failed without raising: refused naming the policy,
    its report on one line."""
    policy = RegoPolicy(DEFAULT_POLICY, "owner.rego")
    interpreter = policy._compile()[0]
    monkeypatch.setattr(interpreter, "query_bundle", lambda _: output)
    with pytest.raises(FormatError) as refused:
        policy.evaluate(EMPTY_INPUT)
    assert str(refused.value) == f"policy 'owner.rego' {message}"
