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
import re
import threading
from dataclasses import dataclass
from typing import Any

from regopy import Interpreter  # type: ignore[import-untyped]
from regopy import rego_shared as _rego_c
from regopy.rego_shared import LogLevel  # type: ignore[import-untyped]

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
EMPTY_INPUT: dict[str, Any] = {"claims": {}, "findings": [], "unchecked": []}
# One error of regopy's report: ``(error N:FILE|OFFSET|LENGTH (errormsg N:MESSAGE``, strings
# prefixed by their length; the offset counts the module's UTF-8 bytes.
_ERROR = re.compile(r"\(error(?: \d+:[^|\s]*\|(\d+)\|\d+)?\s*\(errormsg (\d+):")


@dataclass(frozen=True)
class PolicyDecision:
    allow: bool
    deny: tuple[dict[str, str], ...]


_C = _rego_c.rego  # regopy's C library: its input-building calls, driven without per-call wrappers
_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def _string(text: str) -> bytes:
    """``text`` in JSON string syntax without its quotes: what the C library's string input
    reads (it decodes JSON escapes). Hex digests and names, the usual claims, pass as they are."""
    if _PLAIN.issuperset(text):
        return text.encode()
    return json.dumps(text)[1:-1].encode()


def _add(handle: Any, value: Any) -> int:
    """Push ``value`` onto the input under construction; the first non-zero result code."""
    if value is True or value is False:
        return int(_C.regoInputBoolean(handle, value))
    if isinstance(value, str):
        return int(_C.regoInputString(handle, _string(value)))
    if isinstance(value, int):
        return int(_C.regoInputInt(handle, value))
    if isinstance(value, float):
        return int(_C.regoInputFloat(handle, value))
    if value is None:
        return int(_C.regoInputNull(handle))
    if isinstance(value, dict):
        for key, item in value.items():
            code = (_C.regoInputString(handle, _string(str(key))) or _add(handle, item)
                    or _C.regoInputObjectItem(handle))
            if code:
                return int(code)
        return int(_C.regoInputObject(handle, len(value)))
    if isinstance(value, list | tuple):
        for item in value:
            code = _add(handle, item)
            if code:
                return code
        return int(_C.regoInputArray(handle, len(value)))
    raise UsageError(f"a policy input cannot hold a {type(value).__name__}")


def set_input(interpreter: Any, document: dict[str, Any]) -> None:
    """Give ``document`` to ``interpreter`` as its input, built as terms (no text to parse).

    The same calls regopy's ``Input`` makes, without its Python wrapper around each one: a
    claims document is a few hundred of them, and the wrappers cost more than the policy's
    evaluation."""
    handle = _C.regoNewInput()
    try:
        code = _add(handle, document)
        if code:
            raise FormatError(f"the policy input could not be built (regopy code {code})")
        _rego_c.rego_set_input(interpreter._impl, handle)
    finally:
        _C.regoFreeInput(handle)


def error_line(report: str, source: str) -> str:
    """regopy's error report as one line: each error's message and where it is in ``source``
    (``MESSAGE at line L, column C``, joined by ``; ``); a report of another shape with its
    white space folded."""
    data = source.encode()
    errors = []
    for match in _ERROR.finditer(report):
        start = match.end()
        message = " ".join(report[start:start + int(match[2])].split())
        if match[1] is not None:  # where in the module (a run's error has no place)
            before = data[:int(match[1])]
            lines = before.count(b"\n")
            column = len(before[before.rfind(b"\n") + 1:].decode(errors="replace")) + 1
            message = f"{message} at line {lines + 1}, column {column}"
        errors.append(message)
    if not errors or len(errors) != report.count("(errormsg "):
        return " ".join(report.split())
    return "; ".join(errors)


class RegoPolicy:
    """One compiled policy; ``evaluate`` is safe to call from several threads."""

    def __init__(self, source: str = DEFAULT_POLICY, policy_id: str = "default") -> None:
        if len(source.encode()) > MAX_POLICY_BYTES:
            raise FormatError(f"policy {policy_id!r} exceeds {MAX_POLICY_BYTES} bytes")
        self.source = source
        self.policy_id = policy_id
        self._local = threading.local()
        # a syntax error, another package, a function that does not exist: refused now, not at
        # the first request (regopy finds the last two only when the policy runs)
        self.evaluate(EMPTY_INPUT)

    def _compile(self) -> tuple[Any, Any]:
        compiled: tuple[Any, Any] | None = getattr(self._local, "compiled", None)
        if compiled is None:
            interpreter = Interpreter()
            interpreter.log_level = LogLevel.NONE  # its own report of errors goes to stdout
            try:
                interpreter.add_module("policy.rego", self.source)
                bundle = interpreter.build("data.cvm.policy",
                                           ["cvm/policy/allow", "cvm/policy/deny"])
            except Exception as error:  # regopy reports compile errors as plain exceptions
                raise FormatError(f"policy {self.policy_id!r} does not compile: "
                                  f"{error_line(str(error), self.source)}") from None
            compiled = (interpreter, bundle)
            self._local.compiled = compiled
        return compiled

    def evaluate(self, document: dict[str, Any]) -> PolicyDecision:
        interpreter, bundle = self._compile()
        set_input(interpreter, document)
        try:  # regopy reads a failed run's report (a function not found) as JSON, and fails
            output = str(interpreter.query_bundle(bundle))
        except json.JSONDecodeError as error:
            raise FormatError(f"policy {self.policy_id!r} failed: "
                              f"{error_line(error.doc, self.source)}") from None
        if output == "undefined":
            raise FormatError(f"policy {self.policy_id!r} defines nothing in package cvm.policy")
        try:
            result = json.loads(output)["expressions"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise FormatError(f"policy {self.policy_id!r} failed: "
                              f"{error_line(output, self.source)}") from None
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
