"""The command table of the vTPM: handle counts, authorization roles, handlers.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59, section 5 ("Command Processing"):
each command's table lists its handles (those marked ``@`` need an authorization, with the
role USER, ADMIN or DUP given under "Auth Role") and how many handles the response carries.
A parameter that cannot be unmarshalled is answered with its number (Part 1 section 18.7,
the reference's command dispatcher): TPM_RC_INSUFFICIENT when the buffer ends inside it,
TPM_RC_SIZE when a size field is above its maximum, TPM_RC_VALUE for any other bad value;
a handler names the parameter it reads with :meth:`Call.parameter` (the first by default).
Bytes after the last parameter are TPM_RC_SIZE, with no parameter number.
Each command module ends with its rows of the table (:func:`register` calls, not decorators,
so every handler is a plain function); the engine looks them up by TPM_CC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from cvm.errors import FormatError, InternalError, OversizeError, StatusError, TruncatedError
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.vtpm.tpm_object import fail
from cvm.wire import Reader

if TYPE_CHECKING:
    from cvm.vtpm.engine import Tpm


class AuthRole(Enum):
    """Part 1 section 19.2: which authorization a handle needs."""

    USER = "USER"
    ADMIN = "ADMIN"


@dataclass
class Call:
    """One command being executed: its code, handles, parameters and locality."""

    code: int
    handles: list[int]
    params: Reader
    locality: int
    policy_auth: tuple[bool, ...] = ()
    parsed: bool = False
    number: int = 1  # the parameter being read

    def parameter(self, number: int) -> Reader:
        """The parameters, from parameter ``number`` on (its number answers an error in it)."""
        self.number = number
        return self.params

    def done(self) -> None:
        """Every parameter has been read: refuse trailing bytes (TPM_RC_SIZE)."""
        if self.params.remaining:
            raise fail(TpmRc.SIZE, "trailing bytes after the parameters")
        self.parsed = True


def unmarshal_error(call: Call, error: FormatError) -> StatusError:
    """The response code of a parameter of ``call`` that does not unmarshal."""
    code = (TpmRc.INSUFFICIENT if isinstance(error, TruncatedError)
            else TpmRc.SIZE if isinstance(error, OversizeError) else TpmRc.VALUE)
    return fail(for_parameter(code, call.number), f"parameter {call.number}: {error}")


@dataclass(frozen=True)
class Result:
    """What a handler returns: response handles and marshalled response parameters."""

    handles: tuple[int, ...] = ()
    parameters: bytes = b""


Handler = Callable[["Tpm", Call], Result]


@dataclass(frozen=True)
class CommandSpec:
    code: int
    handler: Handler
    handles: int
    auth: tuple[AuthRole | None, ...]
    response_handles: int
    # the handles that need an authorization, in order: (position, role)
    authorized: tuple[tuple[int, AuthRole], ...] = ()


COMMANDS: dict[int, CommandSpec] = {}


def register(
    code: int,
    handler: Handler,
    *,
    handles: int = 0,
    auth: tuple[AuthRole | None, ...] = (),
    response_handles: int = 0,
) -> None:
    """Enter ``handler`` in the table as the handler of ``code``."""
    if code in COMMANDS:
        raise InternalError(f"command {code:#x} registered twice")
    roles = auth + (None,) * (handles - len(auth))
    authorized = tuple((index, role) for index, role in enumerate(roles) if role is not None)
    COMMANDS[code] = CommandSpec(code, handler, handles, roles, response_handles, authorized)
