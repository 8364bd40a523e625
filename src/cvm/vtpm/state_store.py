"""The ``cvm`` command's vTPM state file: sealed under a key the user holds, rollback-checked.

The SVSM seals its vTPM's state under a key the PSP derives (:mod:`cvm.vtpm.state_file`); a
vTPM run by the ``cvm`` command on an ordinary machine has no PSP, so, as swtpm does with
``--key``, its state is sealed with AES-256-GCM under a key the user supplies (``--key-file``:
32 raw bytes or 64 hex digits) or one ``cvm tpm manufacture`` generates and keeps in the user's
keyring. Either way the keyring holds the monotonic counter of every key, outside the state
file: restoring an old copy of the file (to undo failed PIN guesses) or editing it (to raise
``maxTries``) is refused. One key protects one state; manufacturing a new state under a key
already used supersedes the older state.

The keyring is a JSON file, ``vtpm-keyring.json`` in the user's data directory
(``$CVM_DATA_DIR``, else ``$XDG_DATA_HOME/cvm``, else ``~/.local/share/cvm``), created with mode
0600: ``{"format": "cvm vTPM keyring", "version": 1, "entries": {KEY_ID: {"counter": N,
"key": HEX}}}``, where ``key`` is present only for keys the keyring keeps. Whoever can write the
keyring can reset a counter, and whoever can read it can read keyring-kept keys: it is the
user's trust anchor, as swtpm's key file is. Updates take an exclusive lock and replace the file
atomically.

The sealed payload is ``u32 size ‖ PersistentState ‖ VolatileState`` (the volatile part is
empty except for ``cvm tpm serve`` without ``--port``, which keeps a running TPM between
invocations). The TPM clock persists in the state, and the wall time between two runs counts as
time the TPM ran (a vTPM on an always-on host), so dictionary-attack lockouts recover after
``recoveryTime`` while nothing runs; a wall clock set back never moves the TPM clock back.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cvm.errors import FormatError, IntegrityError, PolicyError, UsageError
from cvm.files import write_atomically
from cvm.vtpm.engine import Tpm
from cvm.vtpm.state import STATE_MAGIC, PersistentState
from cvm.vtpm.state_file import (
    STATE_FILE_MAGIC,
    USER_STATE_FILE_VERSION,
    KeySource,
    StateFileHeader,
    key_id,
    open_state,
    seal_state,
)

KEY_SIZE = 32
KEYRING_NAME = "vtpm-keyring.json"
KEYRING_FORMAT = "cvm vTPM keyring"
KEYRING_VERSION = 1
SIZE_BYTES = 4
MS_PER_S = 1000
CLOCK: Callable[[], float] = time.time
T = TypeVar("T")


def data_dir() -> Path:
    """The user's cvm data directory."""
    explicit = os.environ.get("CVM_DATA_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "cvm"


def default_keyring() -> Path:
    return data_dir() / KEYRING_NAME


def read_key_file(path: Path) -> bytes:
    """A 256-bit state key: 32 raw bytes, or 64 hex digits (surrounding whitespace ignored)."""
    data = path.read_bytes()
    if len(data) == KEY_SIZE:
        return data
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        raise FormatError(f"{path}: a state key is 32 raw bytes or 64 hex digits, not "
                          f"{len(data)} bytes of something else")
    return key


@dataclass
class Keyring:
    """The user's keyring file: state keys it keeps and the counter of every key."""

    path: Path

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            document = json.loads(self.path.read_text())
            entries = document["entries"]
            valid = (document.get("format") == KEYRING_FORMAT
                     and document.get("version") == KEYRING_VERSION and isinstance(entries, dict)
                     and all(isinstance(e, dict) and type(e.get("counter")) is int
                             and e["counter"] >= 0 for e in entries.values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            valid = False
        if not valid:
            raise FormatError(f"{self.path}: not a cvm vTPM keyring")
        return entries  # type: ignore[no-any-return]

    def _update(self, change: Callable[[dict[str, dict[str, Any]]], T]) -> T:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            entries = self._read()
            result = change(entries)
            document = {"format": KEYRING_FORMAT, "version": KEYRING_VERSION,
                        "entries": entries}
            write_atomically(self.path, json.dumps(document, indent=1).encode(), 0o600)
            return result

    def entry(self, kid: bytes) -> dict[str, Any] | None:
        return self._read().get(kid.hex())

    def add(self, key: bytes, keep: bool) -> None:
        """Register ``key`` (and keep it when ``keep``); an existing counter carries on."""
        def change(entries: dict[str, dict[str, Any]]) -> None:
            entry = entries.setdefault(key_id(key).hex(), {"counter": 0})
            if keep:
                entry["key"] = key.hex()
        self._update(change)

    def kept_key(self, kid: bytes) -> bytes:
        kept = (self.entry(kid) or {}).get("key")
        try:
            key = bytes.fromhex(kept) if isinstance(kept, str) else b""
        except ValueError:
            key = b""
        if len(key) != KEY_SIZE or key_id(key) != kid:
            raise UsageError(f"the keyring {self.path} keeps no key {kid.hex()} for this state "
                             f"file (was it made with --key-file, or with another keyring?)")
        return key

    def read_counter(self, kid: bytes) -> int:
        entry = self.entry(kid)
        if entry is None:
            raise PolicyError(f"the keyring {self.path} holds no counter for key {kid.hex()}: "
                              f"the state file cannot be checked against rollback")
        return int(entry["counter"])

    def advance(self, kid: bytes, value: int) -> None:
        def change(entries: dict[str, dict[str, Any]]) -> None:
            entry = entries.get(kid.hex())
            if entry is None or value < entry["counter"]:
                raise PolicyError(f"the counter of key {kid.hex()} cannot go back to {value}")
            entry["counter"] = value
        self._update(change)


@dataclass
class KeyringCounter:
    """The :class:`~cvm.vtpm.state_file.RollbackCounter` of one key in the keyring."""

    keyring: Keyring
    kid: bytes

    def read(self) -> int:
        return self.keyring.read_counter(self.kid)

    def advance(self, value: int) -> None:
        self.keyring.advance(self.kid, value)


@dataclass
class _Deferred:
    """A counter whose advance waits until the file it counts is on disk."""

    counter: KeyringCounter
    pending: int | None = None

    def read(self) -> int:
        return self.counter.read()

    def advance(self, value: int) -> None:
        self.pending = value


@dataclass
class UserKey:
    """A state key the user holds (a key file, or one kept in the keyring)."""

    key: bytes
    source: KeySource

    def state_key(self) -> bytes:
        return self.key


@dataclass
class StateStore:
    """One sealed state file: open it into a running :class:`Tpm`, save the TPM back."""

    path: Path
    keys: UserKey
    counter: KeyringCounter
    clock: Callable[[], float]

    @classmethod
    def manufacture(cls, path: Path, keyring: Keyring, key: bytes | None = None,
                    clock: Callable[[], float] | None = None) -> StateStore:
        """A fresh TPM (new seeds) sealed into a new file at ``path``; refuses to overwrite."""
        if path.exists():
            raise UsageError(f"{path} exists; remove it first to make a new TPM identity")
        if key is None:
            key, source = secrets.token_bytes(KEY_SIZE), KeySource.KEYRING
        else:
            source = KeySource.KEY_FILE
        keyring.add(key, keep=source == KeySource.KEYRING)
        store = cls(path, UserKey(key, source), KeyringCounter(keyring, key_id(key)),
                    clock or CLOCK)
        store.save(Tpm(clock=store.clock))
        return store

    @classmethod
    def open(cls, path: Path, keyring: Keyring, key: bytes | None = None,
             clock: Callable[[], float] | None = None) -> tuple[StateStore, Tpm, bytes]:
        """Authenticate, rollback-check and decrypt ``path``: (store, TPM, volatile bytes)."""
        data = path.read_bytes()
        if data.startswith(STATE_MAGIC):
            raise FormatError(f"{path}: an unprotected vTPM state from an older cvm; make a "
                              f"new one with cvm tpm manufacture")
        header = StateFileHeader.parse(data) if data.startswith(STATE_FILE_MAGIC) else None
        if header is None or header.version != USER_STATE_FILE_VERSION:
            raise FormatError(f"{path}: not a vTPM state file of the cvm command")
        if key is None:
            if header.key_source != KeySource.KEYRING:
                raise UsageError(f"{path} is sealed under a key file: give --key-file")
            keys = UserKey(keyring.kept_key(header.key_id), KeySource.KEYRING)
        else:
            if header.key_source != KeySource.KEY_FILE:
                raise UsageError(f"{path} is sealed under a key of the keyring, not a key file")
            keys = UserKey(key, KeySource.KEY_FILE)
        store = cls(path, keys, KeyringCounter(keyring, key_id(keys.key)), clock or CLOCK)
        try:
            payload = open_state(data, keys, store.counter)
        except IntegrityError as error:
            raise IntegrityError(f"{path}: {error}") from None
        size = int.from_bytes(payload[:SIZE_BYTES], "little")
        if len(payload) < SIZE_BYTES + size:
            raise FormatError(f"{path}: sealed payload is truncated")
        state = PersistentState.from_bytes(payload[SIZE_BYTES:SIZE_BYTES + size])
        tpm = Tpm(state, clock=store.clock)
        tpm.resume_clock(header.saved_at_ms / MS_PER_S)
        return store, tpm, payload[SIZE_BYTES + size:]

    def save(self, tpm: Tpm, volatile: bytes = b"") -> None:
        """Seal the TPM's state into the file, then advance the counter (in that order: a
        crash between the two leaves a file one ahead of its counter, which opens)."""
        tpm.save_clock()
        persistent = tpm.state.to_bytes()
        payload = len(persistent).to_bytes(SIZE_BYTES, "little") + persistent + volatile
        deferred = _Deferred(self.counter)
        sealed = seal_state(payload, self.keys, deferred, secrets.token_bytes,
                            saved_at_ms=max(0, int(self.clock() * MS_PER_S)))
        write_atomically(self.path, sealed)
        assert deferred.pending is not None
        self.counter.advance(deferred.pending)
        tpm.changed = False

    def attach(self, tpm: Tpm, locality: int = 0) -> Callable[[bytes], bytes]:
        """A transport to ``tpm`` that saves the state before any response that changed it
        reaches the caller, and before a DA-protected authValue is checked."""
        tpm.on_da_used = lambda: self.save(tpm)

        def execute(command: bytes) -> bytes:
            response = tpm.execute(command, locality)
            if tpm.changed:
                self.save(tpm)
            return response

        return execute
