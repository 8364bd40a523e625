"""The vTPM state at rest: an AES-256-GCM envelope the host stores, with rollback protection.

The envelope (cvm's own format, little-endian, laid out with :class:`~cvm.wire.Layout`).
Version 1, written by the SVSM (keys from the PSP or a key broker):

======  ====  =================================================================
offset  size  field
======  ====  =================================================================
0x00    8     magic "CVMVTPMS"
0x08    4     version (1)
0x0C    4     key source: 1 = derived by the PSP (MSG_KEY_REQ), 2 = released by a broker
0x10    8     state counter (the rollback counter's value when the file was written)
0x18    12    AES-GCM IV (random)
0x24    4     ciphertext size
0x28    16    AES-GCM tag
======  ====  =================================================================

Version 2, written by the ``cvm`` command (keys the user holds):

======  ====  =================================================================
0x00    8     magic "CVMVTPMS"
0x08    4     version (2)
0x0C    4     key source: 3 = the user's key file, 4 = a key kept in the user's keyring
0x10    8     state counter
0x18    16    key id (:func:`key_id` of the key; names the key and its counter)
0x28    8     saved at: the writer's wall clock, milliseconds since the Unix epoch
0x30    12    AES-GCM IV (random)
0x3C    4     ciphertext size
0x40    16    AES-GCM tag
======  ====  =================================================================

then the ciphertext of the state. The AAD is the header without the tag (everything before
it), so a changed counter, key source, key id or time fails authentication too.

Keys (NIST SP 800-38D AES-256-GCM): a :class:`StateKeyProvider` gives the 32-byte key. The
PSP-derived provider asks MSG_KEY_REQ (SEV-SNP ABI 56860 §7.2, Table 18) for a key mixing the
launch MEASUREMENT and GUEST_POLICY at VMPL0, so another firmware, another policy or the guest
OS at VMPL1+ derives a different key; the derived key is asked for each time a file is
opened or sealed and lives only for that call. A broker-released provider holds a key a key
broker released after remote attestation; the SVSM moves such a key into its own VMPL0 key
page and reads it back through the vCPU (:class:`GuestPageKeyProvider`). Rollback: a
:class:`RollbackCounter` the host cannot reset (the relying party keeps it) must equal the
file's counter — or be one below it, the window of a save interrupted between writing the file
and advancing the counter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from cvm.crypto import aead
from cvm.crypto.tpm_kdf import kdfa
from cvm.errors import Finding, FormatError, IntegrityError, PolicyError, UsageError
from cvm.formats.snp.key_request import GuestFieldSelect, KeyRequest
from cvm.wire import Layout, raw, u32, u64

STATE_FILE_MAGIC = b"CVMVTPMS"
STATE_FILE_VERSION = 1
USER_STATE_FILE_VERSION = 2
HEADER_SIZE = 0x38
HEADER_LAYOUT = Layout(
    "vTPM state file header", HEADER_SIZE,
    [raw("magic", 0x00, 8), u32("version", 0x08), u32("key_source", 0x0C),
     u64("counter", 0x10), raw("iv", 0x18, 12), u32("size", 0x24), raw("tag", 0x28, 16)],
)
AAD_END = 0x28
KEY_ID_SIZE = 16
USER_HEADER_SIZE = 0x50
USER_HEADER_LAYOUT = Layout(
    "vTPM state file header (version 2)", USER_HEADER_SIZE,
    [raw("magic", 0x00, 8), u32("version", 0x08), u32("key_source", 0x0C),
     u64("counter", 0x10), raw("key_id", 0x18, KEY_ID_SIZE), u64("saved_at_ms", 0x28),
     raw("iv", 0x30, 12), u32("size", 0x3C), raw("tag", 0x40, 16)],
)
USER_AAD_END = 0x40
STATE_KEY_LABEL = b"cvm vTPM state"
KEY_ID_LABEL = b"cvm vTPM key id"
STATE_KEY_FIELDS = GuestFieldSelect.MEASUREMENT | GuestFieldSelect.GUEST_POLICY


class KeySource(IntEnum):
    PSP_DERIVED = 1
    BROKER_RELEASED = 2
    KEY_FILE = 3
    KEYRING = 4


USER_KEY_SOURCES = frozenset({KeySource.KEY_FILE, KeySource.KEYRING})


def key_id(key: bytes) -> bytes:
    """The 16-byte id of a user's state key: names it without revealing it."""
    return kdfa("sha256", key, KEY_ID_LABEL, b"", b"", bits=KEY_ID_SIZE * 8)


@dataclass(frozen=True)
class StateFileHeader:
    """The parsed header of a state file of either version (``key_id`` empty in version 1)."""

    version: int
    key_source: int
    counter: int
    key_id: bytes
    saved_at_ms: int
    iv: bytes
    size: int
    tag: bytes

    @property
    def header_size(self) -> int:
        return header_size(self.version)

    @classmethod
    def parse(cls, data: bytes) -> StateFileHeader:
        """The header of ``data``, checked against the file's length; FormatError otherwise."""
        if len(data) < HEADER_SIZE or data[:len(STATE_FILE_MAGIC)] != STATE_FILE_MAGIC:
            raise FormatError("not a cvm vTPM state file (bad magic or truncated)")
        version = int.from_bytes(data[0x08:0x0C], "little")
        if version not in (STATE_FILE_VERSION, USER_STATE_FILE_VERSION):
            raise FormatError(f"vTPM state file version {version} is not supported")
        size_needed = header_size(version)
        if len(data) < size_needed:
            raise FormatError(f"vTPM state file is truncated: {len(data)} bytes, header needs "
                              f"{size_needed}")
        layout = USER_HEADER_LAYOUT if version == USER_STATE_FILE_VERSION else HEADER_LAYOUT
        fields = layout.unpack(data[:size_needed])
        header = cls(version, int(fields["key_source"]), int(fields["counter"]),
                     bytes(fields.get("key_id", b"")), int(fields.get("saved_at_ms", 0)),
                     bytes(fields["iv"]), int(fields["size"]), bytes(fields["tag"]))
        if len(data) != size_needed + header.size:
            raise FormatError(f"vTPM state file is truncated or padded: "
                              f"{len(data) - size_needed} ciphertext bytes, header says "
                              f"{header.size}")
        if (header.key_source in USER_KEY_SOURCES) != (version == USER_STATE_FILE_VERSION):
            raise FormatError(f"vTPM state file: key source {header.key_source} does not "
                              f"belong in a version {version} file")
        return header


def header_size(version: int) -> int:
    return USER_HEADER_SIZE if version == USER_STATE_FILE_VERSION else HEADER_SIZE


class StateKeyProvider(Protocol):
    """Where the state key comes from."""

    source: KeySource

    def state_key(self) -> bytes: ...


class RollbackCounter(Protocol):
    """A monotonic counter outside the host's reach."""

    def read(self) -> int: ...

    def advance(self, value: int) -> None: ...


@dataclass
class DerivedKeyProvider:
    """The state key from MSG_KEY_REQ: ``derive(request)`` returns the PSP's 32-byte key."""

    derive: Callable[[KeyRequest], bytes]
    source: KeySource = KeySource.PSP_DERIVED

    def state_key(self) -> bytes:
        root = self.derive(KeyRequest(guest_field_select=STATE_KEY_FIELDS, vmpl=0))
        return kdfa("sha256", root, STATE_KEY_LABEL, b"", b"", bits=256)


@dataclass
class ReleasedKeyProvider:
    """A state key a key broker released to this VM after attestation."""

    key: bytes
    source: KeySource = KeySource.BROKER_RELEASED

    def state_key(self) -> bytes:
        if len(self.key) != aead.KEY_SIZE:
            raise UsageError("a broker-released state key must be 32 bytes")
        return self.key


@dataclass
class GuestPageKeyProvider:
    """A state key the SVSM keeps in one of its VMPL0 pages: ``load()`` reads it through the
    vCPU each time, so no copy outlives the call that uses it."""

    load: Callable[[], bytes]
    source: KeySource

    def state_key(self) -> bytes:
        key = self.load()
        if len(key) != aead.KEY_SIZE or not any(key):
            raise UsageError("the SVSM's key page holds no state key")
        return key


@dataclass
class MonotonicCounter:
    """A counter that only moves forward (the relying party's side of :class:`RollbackCounter`)."""

    value: int = 0

    def read(self) -> int:
        return self.value

    def advance(self, value: int) -> None:
        if value < self.value:
            raise PolicyError("a monotonic counter cannot go back",
                              (Finding("counter", f">= {self.value}", str(value)),))
        self.value = value


def seal_state(state: bytes, keys: StateKeyProvider, counter: RollbackCounter,
               random: Callable[[int], bytes], *, saved_at_ms: int = 0) -> bytes:
    """Encrypt ``state`` for the host to store, and advance the rollback counter.

    A user's key (:data:`USER_KEY_SOURCES`) makes a version 2 file carrying the key's id and
    ``saved_at_ms``; the SVSM's keys make a version 1 file."""
    version = counter.read() + 1
    iv = random(aead.IV_SIZE)
    key = keys.state_key()
    header: dict[str, int | bytes] = {
        "magic": STATE_FILE_MAGIC, "key_source": int(keys.source), "counter": version,
        "iv": iv, "size": len(state), "tag": bytes(16),
    }
    if keys.source in USER_KEY_SOURCES:
        layout, aad_end = USER_HEADER_LAYOUT, USER_AAD_END
        header.update(version=USER_STATE_FILE_VERSION, key_id=key_id(key),
                      saved_at_ms=saved_at_ms)
    else:
        layout, aad_end = HEADER_LAYOUT, AAD_END
        header["version"] = STATE_FILE_VERSION
    aad = layout.pack(header)[:aad_end]
    ciphertext, tag = aead.encrypt(key, iv, state, aad)
    header["tag"] = tag
    sealed = layout.pack(header) + ciphertext
    counter.advance(version)
    return sealed


def open_state(data: bytes, keys: StateKeyProvider, counter: RollbackCounter) -> bytes:
    """Authenticate, decrypt and rollback-check a state file; refuse anything else."""
    header = StateFileHeader.parse(data)
    if header.key_source != keys.source:
        raise IntegrityError(f"vTPM state file was sealed with key source "
                             f"{header.key_source}, this VM uses {int(keys.source)}")
    key = keys.state_key()
    if header.version == USER_STATE_FILE_VERSION and header.key_id != key_id(key):
        raise IntegrityError(f"vTPM state file was sealed under key {header.key_id.hex()}, "
                             f"not under the key given ({key_id(key).hex()})")
    body = header.header_size
    aad_end = body - 16
    try:
        state = aead.decrypt(key, header.iv, data[body:], header.tag, data[:aad_end])
    except IntegrityError:
        raise IntegrityError("vTPM state file does not authenticate: it was altered, or it "
                             "belongs to another VM, launch measurement or policy") from None
    check_counter(header.counter, counter)
    return state


def check_counter(version: int, counter: RollbackCounter) -> None:
    """Refuse an old copy (version below the counter) and one from the future; advance."""
    current = counter.read()
    if version < current:
        raise PolicyError(
            f"vTPM state file is an old copy (rollback): version {version}, counter {current}",
            (Finding("state counter", str(current), str(version),
                     "the host supplied an older state file"),),
        )
    if version > current + 1:
        raise PolicyError(
            f"vTPM state file is from the future: version {version}, counter {current}",
            (Finding("state counter", f"{current} or {current + 1}", str(version)),),
        )
    counter.advance(version)
