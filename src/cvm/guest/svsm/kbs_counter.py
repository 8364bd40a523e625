"""The SVSM's side of the rollback counter a key broker holds (a
:class:`~cvm.vtpm.state_file.RollbackCounter`; docs/kbs.md, "The rollback counter in the
broker", wire: :mod:`cvm.formats.kbs.vtpm_counter`).

The host relays every byte (plain HTTP through :class:`.relay_http.RelayHttp`) and may forge,
replay, drop or reorder any of it, so nothing here trusts the transport:

* **read** — the value is the one the broker put inside the JWE that released the state key
  (:meth:`KbsCounter.released`, called by :class:`.kbs_agent.KbsAgent`): the JWE is wrapped to
  this boot's TEE key (an old answer does not open), and a JWE the host wrote itself to that
  public key cannot carry the state key, so the state file's AES-GCM fails before its counter
  is looked at.
* **advance** ``n -> n+1`` — a request MAC'd under the key derived from the state key
  (:func:`mac_key`) with a fresh nonce; the save counts only once the broker's answer carries
  ``n+1`` under a MAC over this nonce. Anything else — a refusal, a forged, replayed or missing
  answer — raises, and :func:`~cvm.vtpm.state_file.seal_state` hands no file out.

The state key stays in the SVSM's key page: each advance reads it through the vCPU (``load``)
and derives the MAC key for that call only, as the PSP-derived key is a transient of its call.
The counter's value is not secret and lives in the SVSM's handle.
"""

from __future__ import annotations

from collections.abc import Callable

from cvm.crypto.tpm_kdf import hmac, kdfa, verify_hmac
from cvm.errors import Finding, IntegrityError, PolicyError, StateError, UsageError
from cvm.formats.kbs.vtpm_counter import (
    MAC_KEY_LABEL,
    AdvanceAnswer,
    AdvanceRequest,
    answer_message,
    request_message,
)
from cvm.guest.svsm.relay_http import Exchange, RelayHttp

NONCE_SIZE = 32


def mac_key(state_key: bytes) -> bytes:
    """The HMAC key of the counter's messages, derived from the state key."""
    return kdfa("sha256", state_key, MAC_KEY_LABEL, b"", b"", bits=256)


class KbsCounter:
    """The counter of the state key at ``resource`` (``<repository>/vtpm/<tag>``) at the
    broker at ``url``, reached through the host's ``exchange``."""

    def __init__(self, url: str, exchange: Exchange, resource: str) -> None:
        self.url, self.exchange, self.resource = url, exchange, resource
        self.value: int | None = None
        self._load: Callable[[], bytes] | None = None
        self._random: Callable[[int], bytes] | None = None

    def released(self, value: int, load: Callable[[], bytes],
                 random: Callable[[int], bytes]) -> None:
        """The value the key's release carried; ``load`` reads the state key from its page."""
        self.value, self._load, self._random = value, load, random

    def read(self) -> int:
        if self.value is None:
            raise StateError("the key broker has released no rollback counter yet")
        return self.value

    def advance(self, value: int) -> None:
        """Move to ``value``: nothing to do if there already, the broker's compare-and-set if
        one up; refused otherwise."""
        current = self.read()
        if value == current:
            return
        if value != current + 1:
            raise PolicyError(f"the rollback counter moves by one: {current} to {value}",
                              (Finding("counter", str(current + 1), str(value)),))
        assert self._load is not None and self._random is not None
        nonce = self._random(NONCE_SIZE)
        key = mac_key(self._load())
        mac = hmac("sha256", key, request_message(self.resource, current, value, nonce))
        status, document = RelayHttp(self.url, self.exchange).request(
            "POST", f"/kbs/v0/counter/{self.resource}",
            AdvanceRequest(current, value, nonce, mac).to_json())
        if status != 200:
            kind = str(document.get("type", "")).rsplit("/", 1)[-1]
            message = (f"the key broker refused to advance the rollback counter {current} -> "
                       f"{value} ({status} {kind}): the state was not saved")
            if status in (401, 403, 409):
                raise PolicyError(message)
            raise UsageError(message)
        answer = AdvanceAnswer.from_json(document)
        try:
            verify_hmac("sha256", key, answer.mac,
                        answer_message(self.resource, answer.value, nonce))
        except IntegrityError:
            raise IntegrityError("the key broker's answer to the counter advance does not "
                                 "authenticate (forged or replayed): the state was not "
                                 "saved") from None
        if answer.value != value:
            raise IntegrityError(f"the key broker's counter answer says {answer.value}, not "
                                 f"{value}: the state was not saved")
        self.value = value
