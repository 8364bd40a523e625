"""The one exception tree of cvm.

Every error the library raises on purpose is a :class:`CvmError`. The library never prints and
never exits; the CLI turns each class into one line on stderr and the exit code listed here:

======================  ====  ==========================================================
class                   exit  meaning and what the user should do
======================  ====  ==========================================================
UsageError                 64  a value given by the caller is out of range or inconsistent;
                               fix the argument named in the message
FormatError                65  bytes do not parse as the named structure (also ValueError);
                               the input file is truncated, corrupt or of another kind
VerificationError          66  a signature, chain, MAC or digest does not verify: the input
                               is not authentic (subclasses: Signature, Chain, Integrity)
PolicyError                67  the input is authentic but not acceptable; ``findings`` says
                               which claim, what was expected and what was found
StatusError                68  emulated firmware or TPM refused a command; ``code`` is the
                               status code from the spec's table
StateError                 69  an operation was asked in the wrong lifecycle step
ExternalToolError          70  a real tool (cryptsetup, swtpm, ...) failed or is missing
InternalError              71  a bug in cvm: please report it with ``--debug`` output
======================  ====  ==========================================================

Exit code 2 is kept for "the key is wrong" (as cryptsetup does) and 1 for a check that ran
and said no (for example ``cvm sb verify`` refusing an image).
"""

from __future__ import annotations

from dataclasses import dataclass


class CvmError(Exception):
    """Base of every error cvm raises on purpose."""

    exit_code = 1


class UsageError(CvmError):
    """A caller-supplied value is invalid (out of range, unknown name, inconsistent)."""

    exit_code = 64


class FormatError(CvmError, ValueError):
    """Bytes do not parse as the structure named in the message."""

    exit_code = 65


class TruncatedError(FormatError):
    """The bytes end inside a field (a TPM answers TPM_RC_INSUFFICIENT)."""


class OversizeError(FormatError):
    """A size field is above the structure's maximum (a TPM answers TPM_RC_SIZE)."""


class VerificationError(CvmError):
    """Something that must be authentic is not: a signature, a chain, a MAC or a digest."""

    exit_code = 66


class SignatureError(VerificationError):
    """A signature does not verify under the key it claims."""


class ChainError(VerificationError):
    """A certificate chain does not lead to a trusted root."""


class IntegrityError(VerificationError):
    """A MAC, digest or checksum over protected data does not match."""


class WrongKeyError(IntegrityError):
    """No keyslot opens with this passphrase or key (exit code 2, as cryptsetup uses)."""

    exit_code = 2


@dataclass(frozen=True)
class Finding:
    """One reason an authentic input was not accepted."""

    claim: str
    expected: str
    actual: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.claim} differs: expected {self.expected}, got {self.actual}"
        return f"{text}; {self.hint}" if self.hint else text


class PolicyError(CvmError):
    """An authentic input breaks the policy; ``findings`` lists every broken rule."""

    exit_code = 67

    def __init__(self, message: str, findings: tuple[Finding, ...] = ()) -> None:
        super().__init__(message)
        self.findings = findings


class StatusError(CvmError):
    """Emulated firmware or TPM returned a non-success status code from its spec's table."""

    exit_code = 68

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class StateError(CvmError):
    """An operation was requested in a lifecycle state that does not allow it."""

    exit_code = 69


class ExternalToolError(CvmError):
    """A real external tool failed, or is not installed."""

    exit_code = 70


class InternalError(CvmError):
    """An invariant of cvm itself broke: this is a bug."""

    exit_code = 71
