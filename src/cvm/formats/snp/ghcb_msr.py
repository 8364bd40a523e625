"""The GHCB MSR protocol: requests and responses packed into the 64-bit GHCB MSR (0xC0010130).

GHCB specification (AMD 56421, rev. 2.03) §2.3.1 "GHCB MSR protocol", Table 2. The low 12
bits select the function; the meaning of the upper bits depends on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cvm.errors import FormatError, UsageError

GHCB_MSR = 0xC0010130
_INFO_MASK = 0xFFF


class MsrFunction(enum.IntEnum):
    SEV_INFO_RESPONSE = 0x001
    SEV_INFO_REQUEST = 0x002
    CPUID_REQUEST = 0x004
    CPUID_RESPONSE = 0x005
    AP_RESET_HOLD_REQUEST = 0x006
    AP_RESET_HOLD_RESPONSE = 0x007
    REGISTER_GHCB_REQUEST = 0x012
    REGISTER_GHCB_RESPONSE = 0x013
    PSC_REQUEST = 0x014
    PSC_RESPONSE = 0x015
    RUN_VMPL_REQUEST = 0x016
    RUN_VMPL_RESPONSE = 0x017
    HV_FEATURES_REQUEST = 0x080
    HV_FEATURES_RESPONSE = 0x081
    TERMINATE = 0x100


_FUNCTIONS = {int(function): function for function in MsrFunction}


class PscOperation(enum.IntEnum):
    PRIVATE = 1
    SHARED = 2


CPUID_REGISTERS = ("eax", "ebx", "ecx", "edx")


@dataclass(frozen=True)
class MsrMessage:
    """A decoded MSR value: its function and the value of its upper 52 bits."""

    function: MsrFunction
    data: int

    @classmethod
    def parse(cls, value: int) -> MsrMessage:
        if not 0 <= value < 1 << 64:
            raise FormatError(f"GHCB MSR value {value:#x} is not 64 bits")
        function = _FUNCTIONS.get(value & _INFO_MASK)
        if function is None:
            raise FormatError(f"GHCB MSR function {value & _INFO_MASK:#x} is unknown")
        return cls(function, value >> 12)

    def to_int(self) -> int:
        return (self.data << 12) | self.function


def sev_info_request() -> int:
    return int(MsrFunction.SEV_INFO_REQUEST)


def sev_info_response(maximum: int, minimum: int, c_bit: int) -> int:
    """[63:48] highest, [47:32] lowest GHCB protocol version, [31:24] C-bit position."""
    return (maximum << 48) | (minimum << 32) | (c_bit << 24) | MsrFunction.SEV_INFO_RESPONSE


def cpuid_request(leaf: int, register: str) -> int:
    """[63:32] CPUID function, [31:30] register (0 EAX .. 3 EDX)."""
    if register not in CPUID_REGISTERS:
        raise UsageError(f"CPUID register must be one of {CPUID_REGISTERS}")
    return (leaf << 32) | (CPUID_REGISTERS.index(register) << 30) | MsrFunction.CPUID_REQUEST


def cpuid_response(value: int, register: str) -> int:
    return (value << 32) | (CPUID_REGISTERS.index(register) << 30) | MsrFunction.CPUID_RESPONSE


def register_ghcb_request(gpa: int) -> int:
    """[63:12] GHCB guest frame number."""
    return (gpa >> 12 << 12) | MsrFunction.REGISTER_GHCB_REQUEST


def psc_request(gpa: int, operation: PscOperation) -> int:
    """[55:52] operation (1 private, 2 shared), [51:12] guest frame number."""
    return (int(operation) << 52) | (gpa >> 12 << 12) | MsrFunction.PSC_REQUEST


def psc_response(error: int) -> int:
    """[63:32] error code, 0 on success."""
    return (error << 32) | MsrFunction.PSC_RESPONSE


def run_vmpl_request(vmpl: int) -> int:
    """[39:32] the VMPL to run."""
    if not 0 <= vmpl < 4:
        raise UsageError(f"VMPL {vmpl} is not 0..3")
    return (vmpl << 32) | MsrFunction.RUN_VMPL_REQUEST


def run_vmpl_response(error: int) -> int:
    """[63:32] error code, 0 on success."""
    return (error << 32) | MsrFunction.RUN_VMPL_RESPONSE


def terminate(reason_set: int, reason_code: int) -> int:
    """[15:12] reason-code set, [23:16] reason code."""
    return (reason_code << 16) | (reason_set << 12) | MsrFunction.TERMINATE
