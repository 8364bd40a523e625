"""The vTPM state at rest: an AES-256-GCM envelope the host stores, with rollback protection.

The envelope (cvm's own format, little-endian, laid out with :class:`~cvm.wire.Layout`):

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

then the ciphertext of :meth:`cvm.vtpm.state.PersistentState.to_bytes`. The AAD is the header
without the tag (0x00..0x27), so a changed counter or key source fails authentication too.

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
HEADER_SIZE = 0x38
HEADER_LAYOUT = Layout(
    "vTPM state file header", HEADER_SIZE,
    [raw("magic", 0x00, 8), u32("version", 0x08), u32("key_source", 0x0C),
     u64("counter", 0x10), raw("iv", 0x18, 12), u32("size", 0x24), raw("tag", 0x28, 16)],
)
AAD_END = 0x28
STATE_KEY_LABEL = b"cvm vTPM state"
STATE_KEY_FIELDS = GuestFieldSelect.MEASUREMENT | GuestFieldSelect.GUEST_POLICY


class KeySource(IntEnum):
    PSP_DERIVED = 1
    BROKER_RELEASED = 2


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
               random: Callable[[int], bytes]) -> bytes:
    """Encrypt ``state`` for the host to store, and advance the rollback counter."""
    version = counter.read() + 1
    iv = random(aead.IV_SIZE)
    header: dict[str, int | bytes] = {
        "magic": STATE_FILE_MAGIC, "version": STATE_FILE_VERSION, "key_source": int(keys.source),
        "counter": version, "iv": iv, "size": len(state), "tag": bytes(16),
    }
    aad = HEADER_LAYOUT.pack(header)[:AAD_END]
    ciphertext, tag = aead.encrypt(keys.state_key(), iv, state, aad)
    header["tag"] = tag
    sealed = HEADER_LAYOUT.pack(header) + ciphertext
    counter.advance(version)
    return sealed


def open_state(data: bytes, keys: StateKeyProvider, counter: RollbackCounter) -> bytes:
    """Authenticate, decrypt and rollback-check a state file; refuse anything else."""
    if len(data) < HEADER_SIZE:
        raise FormatError(f"vTPM state file is truncated: {len(data)} bytes, header needs "
                          f"{HEADER_SIZE}")
    header = HEADER_LAYOUT.unpack(data[:HEADER_SIZE])
    if header["magic"] != STATE_FILE_MAGIC or header["version"] != STATE_FILE_VERSION:
        raise FormatError("not a cvm vTPM state file (bad magic or version)")
    size = int(header["size"])
    if len(data) != HEADER_SIZE + size:
        raise FormatError(f"vTPM state file is truncated or padded: {len(data) - HEADER_SIZE} "
                          f"ciphertext bytes, header says {size}")
    if header["key_source"] != keys.source:
        raise IntegrityError(f"vTPM state file was sealed with key source "
                             f"{int(header['key_source'])}, this VM uses {int(keys.source)}")
    try:
        state = aead.decrypt(keys.state_key(), bytes(header["iv"]), data[HEADER_SIZE:],
                             bytes(header["tag"]), data[:AAD_END])
    except IntegrityError:
        raise IntegrityError("vTPM state file does not authenticate: it was altered, or it "
                             "belongs to another VM, launch measurement or policy") from None
    version, current = int(header["counter"]), counter.read()
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
    return state
