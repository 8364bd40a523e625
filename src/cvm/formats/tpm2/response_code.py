"""TPM_RC response codes and their decoding.

TCG "TPM 2.0 Library, Part 2: Structures", revision 1.59, section 6.6, Table 16 (TPM_RC
values) and Table 17 (format-one modifiers TPM_RC_H/P/S and TPM_RC_1..F). A format-zero code
(bit 7 clear) is a version-1 error (``RC_VER1 + n``) or a warning (``RC_WARN + n``); a
format-one code (bit 7 set) carries in bits 8..11 the number of the handle, parameter or
session it is about, with bit 6 telling parameter from handle/session and bit 11 session.
"""

from __future__ import annotations

from enum import IntEnum

RC_VER1 = 0x100
RC_FMT1 = 0x080
RC_WARN = 0x900
RC_P = 0x040
RC_S = 0x800


class TpmRc(IntEnum):
    """TPM_RC values (Part 2 Table 16)."""

    SUCCESS = 0x000
    BAD_TAG = 0x01E
    INITIALIZE = RC_VER1 + 0x000
    FAILURE = RC_VER1 + 0x001
    SEQUENCE = RC_VER1 + 0x003
    DISABLED = RC_VER1 + 0x020
    EXCLUSIVE = RC_VER1 + 0x021
    AUTH_TYPE = RC_VER1 + 0x024
    AUTH_MISSING = RC_VER1 + 0x025
    POLICY = RC_VER1 + 0x026
    PCR = RC_VER1 + 0x027
    PCR_CHANGED = RC_VER1 + 0x028
    UPGRADE = RC_VER1 + 0x02D
    TOO_MANY_CONTEXTS = RC_VER1 + 0x02E
    AUTH_UNAVAILABLE = RC_VER1 + 0x02F
    REBOOT = RC_VER1 + 0x030
    UNBALANCED = RC_VER1 + 0x031
    COMMAND_SIZE = RC_VER1 + 0x042
    COMMAND_CODE = RC_VER1 + 0x043
    AUTHSIZE = RC_VER1 + 0x044
    AUTH_CONTEXT = RC_VER1 + 0x045
    NV_RANGE = RC_VER1 + 0x046
    NV_SIZE = RC_VER1 + 0x047
    NV_LOCKED = RC_VER1 + 0x048
    NV_AUTHORIZATION = RC_VER1 + 0x049
    NV_UNINITIALIZED = RC_VER1 + 0x04A
    NV_SPACE = RC_VER1 + 0x04B
    NV_DEFINED = RC_VER1 + 0x04C
    BAD_CONTEXT = RC_VER1 + 0x050
    CPHASH = RC_VER1 + 0x051
    PARENT = RC_VER1 + 0x052
    NEEDS_TEST = RC_VER1 + 0x053
    NO_RESULT = RC_VER1 + 0x054
    SENSITIVE = RC_VER1 + 0x055
    ASYMMETRIC = RC_FMT1 + 0x001
    ATTRIBUTES = RC_FMT1 + 0x002
    HASH = RC_FMT1 + 0x003
    VALUE = RC_FMT1 + 0x004
    HIERARCHY = RC_FMT1 + 0x005
    KEY_SIZE = RC_FMT1 + 0x007
    MGF = RC_FMT1 + 0x008
    MODE = RC_FMT1 + 0x009
    TYPE = RC_FMT1 + 0x00A
    HANDLE = RC_FMT1 + 0x00B
    KDF = RC_FMT1 + 0x00C
    RANGE = RC_FMT1 + 0x00D
    AUTH_FAIL = RC_FMT1 + 0x00E
    NONCE = RC_FMT1 + 0x00F
    PP = RC_FMT1 + 0x010
    SCHEME = RC_FMT1 + 0x012
    SIZE = RC_FMT1 + 0x015
    SYMMETRIC = RC_FMT1 + 0x016
    TAG = RC_FMT1 + 0x017
    SELECTOR = RC_FMT1 + 0x018
    INSUFFICIENT = RC_FMT1 + 0x01A
    SIGNATURE = RC_FMT1 + 0x01B
    KEY = RC_FMT1 + 0x01C
    POLICY_FAIL = RC_FMT1 + 0x01D
    INTEGRITY = RC_FMT1 + 0x01F
    TICKET = RC_FMT1 + 0x020
    RESERVED_BITS = RC_FMT1 + 0x021
    BAD_AUTH = RC_FMT1 + 0x022
    EXPIRED = RC_FMT1 + 0x023
    POLICY_CC = RC_FMT1 + 0x024
    BINDING = RC_FMT1 + 0x025
    CURVE = RC_FMT1 + 0x026
    ECC_POINT = RC_FMT1 + 0x027
    CONTEXT_GAP = RC_WARN + 0x001
    OBJECT_MEMORY = RC_WARN + 0x002
    SESSION_MEMORY = RC_WARN + 0x003
    MEMORY = RC_WARN + 0x004
    SESSION_HANDLES = RC_WARN + 0x005
    OBJECT_HANDLES = RC_WARN + 0x006
    LOCALITY = RC_WARN + 0x007
    YIELDED = RC_WARN + 0x008
    CANCELED = RC_WARN + 0x009
    TESTING = RC_WARN + 0x00A
    NV_RATE = RC_WARN + 0x020
    LOCKOUT = RC_WARN + 0x021
    RETRY = RC_WARN + 0x022
    NV_UNAVAILABLE = RC_WARN + 0x023


def is_format_one(code: int) -> bool:
    """Whether ``code`` is a format-one code (bit 7 set): it may name a handle/param/session."""
    return bool(code & RC_FMT1)


def for_parameter(code: int, number: int) -> int:
    """``code`` about command parameter ``number`` (1..15): ``code + TPM_RC_P + TPM_RC_n``."""
    if not is_format_one(code):
        return code
    return base_code(code) | RC_P | ((number & 0xF) << 8)


def for_handle(code: int, number: int) -> int:
    """``code`` about handle ``number`` (1..7): ``code + TPM_RC_H + TPM_RC_n``."""
    if not is_format_one(code):
        return code
    return base_code(code) | ((number & 0x7) << 8)


def for_session(code: int, number: int) -> int:
    """``code`` about authorization session ``number`` (1..7): ``code + TPM_RC_S + TPM_RC_n``."""
    if not is_format_one(code):
        return code
    return base_code(code) | RC_S | ((number & 0x7) << 8)


def base_code(code: int) -> int:
    """The TPM_RC value without its handle/parameter/session number."""
    return code & 0xBF if is_format_one(code) else code


def describe(code: int) -> str:
    """A readable name for a response code: ``TPM_RC_POLICY_FAIL (session 1)``."""
    base = base_code(code)
    try:
        name = f"TPM_RC_{TpmRc(base).name}"
    except ValueError:
        name = f"TPM_RC {base:#05x}"
    if not is_format_one(code):
        return name
    number = (code >> 8) & 0xF
    if code & RC_P:
        where = f"parameter {number}" if number else "a parameter"
    elif code & RC_S:
        where = f"session {number & 0x7}" if number & 0x7 else "a session"
    else:
        where = f"handle {number}" if number else ""
    return f"{name} ({where})" if where else name
