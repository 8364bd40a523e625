"""The Rego policy's input document reaches the policy unchanged."""

from __future__ import annotations

import pytest

from cvm.attestation.verifier.rego_policy import RegoPolicy

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
