"""The vTPM state file byte for byte: its two header versions at the offsets the module's
table gives, the key id and derived state key recomputed by hand (KDFa, Part 1 section
11.4.10.2, with the standard library's HMAC), and every refusal with its exact message and
findings."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest

from cvm.crypto import aead
from cvm.errors import Finding, FormatError, IntegrityError, PolicyError, UsageError
from cvm.vtpm.state_file import (
    DerivedKeyProvider,
    GuestPageKeyProvider,
    KeySource,
    MonotonicCounter,
    ReleasedKeyProvider,
    StateFileHeader,
    check_counter,
    key_id,
    open_state,
    seal_state,
)

KEY = b"\x42" * 32
STATE = b"the vTPM's persistent state"


def _kdfa_sha256(key: bytes, label: bytes, bits: int) -> bytes:
    """One or more KDFa blocks with empty contexts: HMAC(key, u32 i ‖ label ‖ 0 ‖ u32 bits)."""
    out = b"".join(hmac.new(key, struct.pack(">I", i) + label + b"\0" + struct.pack(">I", bits),
                            hashlib.sha256).digest() for i in range(1, (bits + 255) // 256 + 1))
    return out[:bits // 8]


def _twos(n: int) -> bytes:
    return b"\x02" * n


def test_key_id_and_derived_state_key_are_kdfa_with_empty_contexts() -> None:
    assert key_id(KEY) == _kdfa_sha256(KEY, b"cvm vTPM key id", 128)
    root = b"\x33" * 32
    provider = DerivedKeyProvider(lambda request: root)
    assert provider.state_key() == _kdfa_sha256(root, b"cvm vTPM state", 256)


def test_a_version_1_file_is_laid_out_as_documented() -> None:
    sealed = seal_state(STATE, ReleasedKeyProvider(KEY), MonotonicCounter(7), _twos)
    magic, version, source, counter = struct.unpack_from("<8sIIQ", sealed, 0)
    assert (magic, version, source, counter) == (b"CVMVTPMS", 1, 2, 8)
    iv, size, tag = struct.unpack_from("<12sI16s", sealed, 0x18)
    assert (iv, size, len(sealed)) == (b"\x02" * 12, len(STATE), 0x38 + len(STATE))
    assert aead.decrypt(KEY, iv, sealed[0x38:], tag, sealed[:0x28]) == STATE
    header = StateFileHeader.parse(sealed)
    assert (header.key_id, header.saved_at_ms, header.header_size) == (b"", 0, 0x38)


def test_a_version_2_file_is_laid_out_as_documented() -> None:
    keys = ReleasedKeyProvider(KEY, KeySource.KEY_FILE)
    sealed = seal_state(STATE, keys, MonotonicCounter(0), _twos, saved_at_ms=1234567)
    magic, version, source, counter = struct.unpack_from("<8sIIQ", sealed, 0)
    assert (magic, version, source, counter) == (b"CVMVTPMS", 2, 3, 1)
    ident, saved_at, iv, size, tag = struct.unpack_from("<16sQ12sI16s", sealed, 0x18)
    assert (ident, saved_at, iv, size) == (key_id(KEY), 1234567, b"\x02" * 12, len(STATE))
    assert aead.decrypt(KEY, iv, sealed[0x50:], tag, sealed[:0x40]) == STATE
    header = StateFileHeader.parse(sealed)
    assert (header.key_id, header.saved_at_ms, header.header_size) == (key_id(KEY), 1234567,
                                                                       0x50)
    unstamped = seal_state(STATE, keys, MonotonicCounter(0), _twos)
    assert StateFileHeader.parse(unstamped).saved_at_ms == 0


@pytest.mark.parametrize("source", [KeySource.BROKER_RELEASED, KeySource.KEYRING])
def test_an_empty_state_fills_exactly_the_header(source: KeySource) -> None:
    keys = ReleasedKeyProvider(KEY, source)
    sealed = seal_state(b"", keys, MonotonicCounter(0), _twos)
    assert len(sealed) == (0x50 if source is KeySource.KEYRING else 0x38)
    assert open_state(sealed, keys, MonotonicCounter(1)) == b""


def test_a_malformed_file_is_refused_with_what_is_wrong() -> None:
    keys = ReleasedKeyProvider(KEY, KeySource.KEY_FILE)
    sealed = seal_state(STATE, keys, MonotonicCounter(0), _twos)
    version_1 = seal_state(STATE, ReleasedKeyProvider(KEY), MonotonicCounter(0), _twos)
    for data in (b"CVMVTPMX" + sealed[8:], sealed[:0x37]):
        with pytest.raises(FormatError) as refused:
            StateFileHeader.parse(data)
        assert str(refused.value) == "not a cvm vTPM state file (bad magic or truncated)"
    with pytest.raises(FormatError) as refused:
        StateFileHeader.parse(sealed[:8] + struct.pack("<I", 3) + sealed[12:])
    assert str(refused.value) == "vTPM state file version 3 is not supported"
    with pytest.raises(FormatError) as refused:
        StateFileHeader.parse(sealed[:0x4F])
    assert str(refused.value) == "vTPM state file is truncated: 79 bytes, header needs 80"
    with pytest.raises(FormatError) as refused:
        StateFileHeader.parse(sealed + b"\0")
    assert str(refused.value) == (f"vTPM state file is truncated or padded: {len(STATE) + 1} "
                                  f"ciphertext bytes, header says {len(STATE)}")
    with pytest.raises(FormatError) as refused:
        StateFileHeader.parse(version_1[:12] + struct.pack("<I", 3) + version_1[16:])
    assert str(refused.value) == ("vTPM state file: key source 3 does not belong in a "
                                  "version 1 file")


def test_a_file_for_another_key_is_refused_naming_the_key() -> None:
    keys = ReleasedKeyProvider(KEY, KeySource.KEY_FILE)
    sealed = seal_state(STATE, keys, MonotonicCounter(0), _twos)
    with pytest.raises(IntegrityError) as refused:
        open_state(sealed, ReleasedKeyProvider(KEY, KeySource.KEYRING), MonotonicCounter(1))
    assert str(refused.value) == "vTPM state file was sealed with key source 3, this VM uses 4"
    other = b"\x43" * 32
    with pytest.raises(IntegrityError) as refused:
        open_state(sealed, ReleasedKeyProvider(other, KeySource.KEY_FILE), MonotonicCounter(1))
    assert str(refused.value) == (f"vTPM state file was sealed under key {key_id(KEY).hex()}, "
                                  f"not under the key given ({key_id(other).hex()})")
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(IntegrityError) as refused:
        open_state(altered, keys, MonotonicCounter(1))
    assert str(refused.value) == ("vTPM state file does not authenticate: it was altered, or "
                                  "it belongs to another VM, launch measurement or policy")


def test_counter_refusals_carry_their_findings() -> None:
    with pytest.raises(PolicyError) as refused:
        MonotonicCounter(3).advance(2)
    assert str(refused.value) == "a monotonic counter cannot go back"
    assert refused.value.findings == (Finding("counter", ">= 3", "2"),)
    with pytest.raises(PolicyError) as refused:
        check_counter(4, MonotonicCounter(5))
    assert str(refused.value) == ("vTPM state file is an old copy (rollback): version 4, "
                                  "counter 5")
    assert refused.value.findings == (
        Finding("state counter", "5", "4", "the host supplied an older state file"),
    )
    with pytest.raises(PolicyError) as refused:
        check_counter(7, MonotonicCounter(5))
    assert str(refused.value) == "vTPM state file is from the future: version 7, counter 5"
    assert refused.value.findings == (Finding("state counter", "5 or 6", "7"),)
    counter = MonotonicCounter(5)
    check_counter(6, counter)
    assert counter.read() == 6


def test_key_provider_refusals_say_what_is_wrong() -> None:
    with pytest.raises(UsageError) as refused:
        ReleasedKeyProvider(b"\x01" * 31).state_key()
    assert str(refused.value) == "a broker-released state key must be 32 bytes"
    with pytest.raises(UsageError) as refused:
        GuestPageKeyProvider(lambda: bytes(32), KeySource.BROKER_RELEASED).state_key()
    assert str(refused.value) == "the SVSM's key page holds no state key"

