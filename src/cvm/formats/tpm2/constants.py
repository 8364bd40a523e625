"""TPM 2.0 constants: algorithm IDs, command codes, tags, handles, attributes.

TCG "TPM 2.0 Library, Part 2: Structures", revision 1.59: Table 9 (TPM_ALG_ID), Table 11
(TPM_ECC_CURVE), Table 12 (TPM_CC), Table 19 (TPM_ST), Table 20 (TPM_SU), Table 21 (TPM_SE),
Table 22 (TPM_CAP), Table 23 (TPM_PT), Table 28 (TPM_RH), Table 31 (TPMA_OBJECT),
Table 32 (TPMA_SESSION) and Table 233 (TPMA_NV). All TPM marshalling is big-endian.

The digest helpers use :mod:`hashlib` only (formats never import the crypto package).
"""

from __future__ import annotations

import hashlib
from enum import IntEnum, IntFlag

from cvm.errors import FormatError


class TpmAlg(IntEnum):
    """TPM_ALG_ID (Part 2 Table 9) — the subset cvm speaks."""

    RSA = 0x0001
    MGF1 = 0x0007
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CFB = 0x0043


class TpmEccCurve(IntEnum):
    """TPM_ECC_CURVE (Part 2 Table 11)."""

    NONE = 0x0000
    NIST_P256 = 0x0003
    NIST_P384 = 0x0004


class TpmCc(IntEnum):
    """TPM_CC command codes (Part 2 Table 12) implemented by the cvm vTPM."""

    NV_UNDEFINE_SPACE_SPECIAL = 0x11F
    EVICT_CONTROL = 0x120
    NV_UNDEFINE_SPACE = 0x122
    CLEAR = 0x126
    HIERARCHY_CHANGE_AUTH = 0x129
    NV_DEFINE_SPACE = 0x12A
    CREATE_PRIMARY = 0x131
    ACTIVATE_CREDENTIAL = 0x147
    NV_INCREMENT = 0x134
    NV_EXTEND = 0x136
    NV_WRITE = 0x137
    DICTIONARY_ATTACK_LOCK_RESET = 0x139
    DICTIONARY_ATTACK_PARAMETERS = 0x13A
    PCR_EVENT = 0x13C
    PCR_RESET = 0x13D
    SEQUENCE_COMPLETE = 0x13E
    SELF_TEST = 0x143
    STARTUP = 0x144
    SHUTDOWN = 0x145
    NV_READ = 0x14E
    POLICY_SECRET = 0x151
    CREATE = 0x153
    LOAD = 0x157
    QUOTE = 0x158
    HMAC_START = 0x15B
    SEQUENCE_UPDATE = 0x15C
    SIGN = 0x15D
    UNSEAL = 0x15E
    POLICY_SIGNED = 0x160
    CONTEXT_LOAD = 0x161
    CONTEXT_SAVE = 0x162
    FLUSH_CONTEXT = 0x165
    LOAD_EXTERNAL = 0x167
    MAKE_CREDENTIAL = 0x168
    NV_READ_PUBLIC = 0x169
    POLICY_AUTHORIZE = 0x16A
    POLICY_AUTH_VALUE = 0x16B
    POLICY_COMMAND_CODE = 0x16C
    POLICY_OR = 0x171
    READ_PUBLIC = 0x173
    START_AUTH_SESSION = 0x176
    VERIFY_SIGNATURE = 0x177
    GET_CAPABILITY = 0x17A
    GET_RANDOM = 0x17B
    HASH = 0x17D
    PCR_READ = 0x17E
    POLICY_PCR = 0x17F
    POLICY_RESTART = 0x180
    PCR_EXTEND = 0x182
    EVENT_SEQUENCE_COMPLETE = 0x185
    HASH_SEQUENCE_START = 0x186
    POLICY_GET_DIGEST = 0x189
    POLICY_PASSWORD = 0x18C
    POLICY_AUTHORIZE_NV = 0x192


class TpmSt(IntEnum):
    """TPM_ST structure tags (Part 2 Table 19)."""

    RSP_COMMAND = 0x00C4
    NULL = 0x8000
    NO_SESSIONS = 0x8001
    SESSIONS = 0x8002
    ATTEST_CERTIFY = 0x8017
    ATTEST_QUOTE = 0x8018
    CREATION = 0x8021
    VERIFIED = 0x8022
    AUTH_SECRET = 0x8023
    HASHCHECK = 0x8024
    AUTH_SIGNED = 0x8025


class TpmSu(IntEnum):
    """TPM_SU startup/shutdown types (Part 2 Table 20)."""

    CLEAR = 0x0000
    STATE = 0x0001


class TpmSe(IntEnum):
    """TPM_SE session types (Part 2 Table 21)."""

    HMAC = 0x00
    POLICY = 0x01
    TRIAL = 0x03


class TpmCap(IntEnum):
    """TPM_CAP capability selectors (Part 2 Table 22) answered by GetCapability."""

    ALGS = 0x00000000
    HANDLES = 0x00000001
    COMMANDS = 0x00000002
    PCRS = 0x00000005
    TPM_PROPERTIES = 0x00000006


class TpmPt(IntEnum):
    """TPM_PT property tags (Part 2 Table 23) answered for TPM_CAP_TPM_PROPERTIES."""

    FAMILY_INDICATOR = 0x100
    LEVEL = 0x101
    REVISION = 0x102
    DAY_OF_YEAR = 0x103
    YEAR = 0x104
    MANUFACTURER = 0x105
    VENDOR_STRING_1 = 0x106
    FIRMWARE_VERSION_1 = 0x10B
    FIRMWARE_VERSION_2 = 0x10C
    HR_TRANSIENT_MIN = 0x10E
    HR_PERSISTENT_MIN = 0x10F
    HR_LOADED_MIN = 0x110
    ACTIVE_SESSIONS_MAX = 0x111
    PCR_COUNT = 0x112
    NV_INDEX_MAX = 0x117
    INPUT_BUFFER = 0x11C
    MAX_DIGEST = 0x120
    PERMANENT = 0x200
    STARTUP_CLEAR = 0x201
    LOCKOUT_COUNTER = 0x20E
    MAX_AUTH_FAIL = 0x20F
    LOCKOUT_INTERVAL = 0x210
    LOCKOUT_RECOVERY = 0x211


class TpmRh(IntEnum):
    """Permanent handles TPM_RH / TPM_RS (Part 2 Table 28)."""

    OWNER = 0x40000001
    NULL = 0x40000007
    PW = 0x40000009
    LOCKOUT = 0x4000000A
    ENDORSEMENT = 0x4000000B
    PLATFORM = 0x4000000C


class TpmHt(IntEnum):
    """TPM_HT handle types: the most significant byte of a handle (Part 2 Table 27)."""

    PCR = 0x00
    NV_INDEX = 0x01
    HMAC_SESSION = 0x02
    POLICY_SESSION = 0x03
    PERMANENT = 0x40
    TRANSIENT = 0x80
    PERSISTENT = 0x81


class TpmaObject(IntFlag):
    """TPMA_OBJECT bits (Part 2 Table 31)."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18
    X509_SIGN = 1 << 19


TPMA_OBJECT_RESERVED = 0xFFF0F309  # bits 0, 3, 8, 9, 12..15, 20..31 must be zero


class TpmaSession(IntFlag):
    """TPMA_SESSION bits (Part 2 Table 32)."""

    CONTINUE_SESSION = 1 << 0
    AUDIT_EXCLUSIVE = 1 << 1
    AUDIT_RESET = 1 << 2
    DECRYPT = 1 << 5
    ENCRYPT = 1 << 6
    AUDIT = 1 << 7


class TpmaNv(IntFlag):
    """TPMA_NV bits (Part 2 Table 233); bits 4..7 hold TPM_NT (Table 232)."""

    PPWRITE = 1 << 0
    OWNERWRITE = 1 << 1
    AUTHWRITE = 1 << 2
    POLICYWRITE = 1 << 3
    POLICY_DELETE = 1 << 10
    WRITELOCKED = 1 << 11
    WRITEALL = 1 << 12
    WRITEDEFINE = 1 << 13
    WRITE_STCLEAR = 1 << 14
    GLOBALLOCK = 1 << 15
    PPREAD = 1 << 16
    OWNERREAD = 1 << 17
    AUTHREAD = 1 << 18
    POLICYREAD = 1 << 19
    NO_DA = 1 << 25
    ORDERLY = 1 << 26
    CLEAR_STCLEAR = 1 << 27
    READLOCKED = 1 << 28
    WRITTEN = 1 << 29
    PLATFORMCREATE = 1 << 30
    READ_STCLEAR = 1 << 31


class TpmNt(IntEnum):
    """TPM_NT index types (Part 2 Table 232), stored in TPMA_NV bits 4..7."""

    ORDINARY = 0x0
    COUNTER = 0x1
    BITS = 0x2
    EXTEND = 0x4


TPM_NT_SHIFT = 4
TPM_GENERATED_VALUE = 0xFF544347
PCR_COUNT = 24
PCR_SELECT_MAX = 3
MAX_SYM_DATA = 128

_HASH_NAMES = {
    TpmAlg.SHA1: "sha1",
    TpmAlg.SHA256: "sha256",
    TpmAlg.SHA384: "sha384",
    TpmAlg.SHA512: "sha512",
}
_BANK_NAMES = {name: alg for alg, name in _HASH_NAMES.items()}
_NAMES_BY_VALUE = {int(alg): name for alg, name in _HASH_NAMES.items()}  # by a format's integer
_DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


def is_hash_alg(alg: int) -> bool:
    """Whether ``alg`` is a hash algorithm cvm implements."""
    return alg in _HASH_NAMES


def hash_name(alg: int) -> str:
    """The :mod:`hashlib` name of a TPM hash algorithm ("sha256")."""
    name = _NAMES_BY_VALUE.get(alg)
    if name is None:
        raise FormatError(f"TPM_ALG {alg:#06x} is not a supported hash algorithm")
    return name


def hash_alg(name: str) -> TpmAlg:
    """The TPM_ALG_ID of a hash or PCR bank name ("sha256" → TPM_ALG_SHA256)."""
    try:
        return _BANK_NAMES[name.lower().replace("-", "")]
    except KeyError:
        raise FormatError(f"unknown hash algorithm or PCR bank {name!r}") from None


def digest_size(alg: int) -> int:
    """Size in bytes of a digest of the TPM hash algorithm ``alg``."""
    return _DIGEST_SIZES[hash_name(alg)]


def digest(alg: int, *parts: bytes) -> bytes:
    """H_alg(part_0 ‖ part_1 ‖ …)."""
    state = hashlib.new(hash_name(alg))
    for part in parts:
        state.update(part)
    return state.digest()


def handle_type(handle: int) -> int:
    """The TPM_HT of a handle (its most significant byte)."""
    return (handle >> 24) & 0xFF
