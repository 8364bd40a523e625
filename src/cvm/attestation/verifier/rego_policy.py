"""Appraisal policies in Rego (Open Policy Agent's language, as Trustee's attestation service
uses), evaluated in-process by ``regopy``.

A policy is a Rego module of ``package cvm.policy`` that defines ``allow`` (a boolean) and
``deny`` (a set of findings, each ``{"rule", "expected", "actual", "input"}``). Its input
document is::

    {
      "claims": {                      what the verified, replayed evidence says
        "measurement": hex, "host_data": hex, "report_data": hex, "chip_id": hex,
        "vmpl": int, "guest_svn": int, "firmware": "MAJOR.MINOR",
        "reported_tcb" / "current_tcb" / "committed_tcb" / "launch_tcb":
            {"boot_loader", "tee", "snp", "microcode", "fmc"},
        "policy": {"debug": bool, "migrate_ma": bool, "smt": bool, "single_socket": bool},
        "pcrs": {"sha256": {"0": hex, ...}},     (the quoted PCRs, replayed from the log)
        "boot_images": [hex, ...]                (Authenticode digests loaded, PCR 4)
      },
      "findings": [...],               the validate step's findings against the reference
      "unchecked": [...]               the checks the reference values leave out
    }

:data:`DEFAULT_POLICY` denies exactly the validate step's findings; a deployment adds rules
(for example a TCB minimum rolled out to a fleet) by adding ``deny`` rules.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from regopy import Input, Interpreter  # type: ignore[import-untyped]

from cvm.errors import FormatError, UsageError

DEFAULT_POLICY = """package cvm.policy

import rego.v1

# Refuse unless every rule holds: the validate step's findings (reference values) are denials.
default allow := false

deny contains finding if {
	some finding in input.findings
}

allow if count(deny) == 0
"""
MAX_POLICY_BYTES = 64 << 10
_FINDING_KEYS = {"rule", "expected", "actual", "input"}


@dataclass(frozen=True)
class PolicyDecision:
    allow: bool
    deny: tuple[dict[str, str], ...]


def _escaped(value: Any) -> Any:
    """``value`` with every string (keys too) in JSON string syntax without its quotes: what
    regopy's term builder expects (it reads a string's contents as JSON escapes)."""
    if isinstance(value, str):
        return json.dumps(value)[1:-1]
    if isinstance(value, dict):
        return {json.dumps(str(key))[1:-1]: _escaped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(item) for item in value]
    return value


class RegoPolicy:
    """One compiled policy; ``evaluate`` is safe to call from several threads."""

    def __init__(self, source: str = DEFAULT_POLICY, policy_id: str = "default") -> None:
        if len(source.encode()) > MAX_POLICY_BYTES:
            raise UsageError(f"policy {policy_id!r} exceeds {MAX_POLICY_BYTES} bytes")
        self.source = source
        self.policy_id = policy_id
        self._local = threading.local()
        self._compile()  # a syntax error shows now, not at the first request

    def _compile(self) -> tuple[Any, Any]:
        compiled: tuple[Any, Any] | None = getattr(self._local, "compiled", None)
        if compiled is None:
            interpreter = Interpreter()
            try:
                interpreter.add_module("policy.rego", self.source)
                bundle = interpreter.build("data.cvm.policy",
                                           ["cvm/policy/allow", "cvm/policy/deny"])
            except Exception as error:  # regopy reports compile errors as plain exceptions
                raise FormatError(f"policy {self.policy_id!r} does not compile: {error}") from None
            compiled = (interpreter, bundle)
            self._local.compiled = compiled
        return compiled

    def evaluate(self, document: dict[str, Any]) -> PolicyDecision:
        interpreter, bundle = self._compile()
        interpreter.set_input(Input(_escaped(document)))  # built as terms, no text to parse
        output = interpreter.query_bundle(bundle)
        try:
            result = json.loads(str(output))["expressions"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise FormatError(f"policy {self.policy_id!r} failed: {output}") from None
        allow = result.get("allow") is True
        deny = result.get("deny", [])
        if not isinstance(deny, list):
            raise FormatError(f"policy {self.policy_id!r}: deny must be a set")
        findings = []
        for item in deny:
            if isinstance(item, dict):
                findings.append({key: str(item.get(key, "")) for key in _FINDING_KEYS})
            else:
                findings.append({"rule": str(item), "expected": "", "actual": "", "input": ""})
        return PolicyDecision(allow and not findings, tuple(findings))
