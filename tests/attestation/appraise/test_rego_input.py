"""The Rego policy's input document reaches the policy unchanged."""

from __future__ import annotations

import pytest

from cvm.attestation.verifier.rego_policy import (
    DEFAULT_POLICY,
    MAX_POLICY_BYTES,
    PolicyDecision,
    RegoPolicy,
)
from cvm.errors import FormatError

EXTRA_RULE = """
deny contains {"rule": k, "expected": input.claims[k], "actual": "", "input": ""} if {
	some k, _ in input.claims
}
"""


@pytest.mark.parametrize("text", ["a\\b", 'q"x', "nl\nx", "é", "\x00z", "😀", "\\u0041",
                                  "\\EFI\\BOOT\\BOOTX64.EFI"])
def test_input_strings_reach_the_policy_byte_for_byte(text: str) -> None:
    """Strings of the input document (hints carry paths like \\EFI\\BOOT) reach the policy and
    come back in its findings unchanged, keys included."""
    policy = RegoPolicy(RegoPolicy().source + EXTRA_RULE)
    finding = {"rule": text, "expected": "e", "actual": "a", "input": text}
    decision = policy.evaluate({"claims": {text: text}, "findings": [finding], "unchecked": []})
    assert not decision.allow
    def rows(found: object) -> list[list[tuple[str, str]]]:
        assert isinstance(found, list | tuple)
        return sorted(sorted(row.items()) for row in found)

    assert rows(decision.deny) == rows(
        [finding, {"rule": text, "expected": text, "actual": "", "input": ""}])


def test_the_policy_size_limit_is_inclusive() -> None:
    """A policy of exactly MAX_POLICY_BYTES compiles; one byte more is refused."""
    padding = MAX_POLICY_BYTES - len(DEFAULT_POLICY.encode()) - 1
    exact = DEFAULT_POLICY + "#" + "x" * (padding - 1) + "\n"
    assert len(exact.encode()) == MAX_POLICY_BYTES
    assert RegoPolicy(exact).evaluate({"claims": {}, "findings": [], "unchecked": []}).allow
    with pytest.raises(FormatError, match=f"policy 'big' exceeds {MAX_POLICY_BYTES} bytes"):
        RegoPolicy(exact + "\n", "big")


def test_what_a_policy_may_leave_out_of_its_findings() -> None:
    """A policy without deny rules allows on its own; a deny that is a plain value, or a
    finding with keys left out, still reaches the verdict with empty fields."""
    allow_only = "package cvm.policy\n\nimport rego.v1\n\nallow := true\n"
    assert RegoPolicy(allow_only).evaluate(
        {"claims": {}, "findings": [], "unchecked": []}) == PolicyDecision(True, ())
    terse = ("package cvm.policy\n\nimport rego.v1\n\nallow := true\n\n"
             'deny contains "plain" if { true }\n\n'
             'deny contains {"rule": "r"} if { true }\n')
    decision = RegoPolicy(terse).evaluate({"claims": {}, "findings": [], "unchecked": []})
    assert not decision.allow
    assert sorted(decision.deny, key=lambda row: row["rule"]) == [
        {"rule": "plain", "expected": "", "actual": "", "input": ""},
        {"rule": "r", "expected": "", "actual": "", "input": ""}]


def test_the_default_policy_is_named_default() -> None:
    """The id a verdict and an EAR token carry when the owner registered no policy."""
    assert RegoPolicy().policy_id == "default"
    assert RegoPolicy(DEFAULT_POLICY, "rollout").policy_id == "rollout"
