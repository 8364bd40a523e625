"""The ``cvm`` command's sealed vTPM state, check by check: where the keyring lives, how it is
written (mode, lock, first counter), every refusal of a keyring, a key or a state file with its
exact message, the file modes of what is written, and what the transport saves and when."""

from __future__ import annotations

import fcntl
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from cvm.errors import FormatError, IntegrityError, PolicyError, StatusError, UsageError
from cvm.formats.tpm2.constants import TpmRh
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.state_file import KeySource, StateFileHeader, key_id, seal_state
from cvm.vtpm.state_store import (
    KEYRING_NAME,
    Keyring,
    KeyringCounter,
    StateStore,
    UserKey,
    data_dir,
    default_keyring,
    read_key_file,
    write_atomically,
)
from cvm.vtpm.templates import sealed_template, srk_template

KEY = bytes(range(32))
OTHER = b"\xa5" * 32


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _entries(keyring: Keyring) -> dict[str, Any]:
    return json.loads(keyring.path.read_text())["entries"]  # type: ignore[no-any-return]


# Where the keyring lives


def test_the_data_directory_is_cvm_data_dir_then_xdg_data_home_then_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVM_DATA_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "explicit"
    assert default_keyring() == tmp_path / "explicit" / KEYRING_NAME
    monkeypatch.setenv("CVM_DATA_DIR", "")
    assert data_dir() == tmp_path / "xdg" / "cvm"
    monkeypatch.delenv("CVM_DATA_DIR")
    assert data_dir() == tmp_path / "xdg" / "cvm"
    monkeypatch.setenv("XDG_DATA_HOME", "")
    assert data_dir() == tmp_path / "home" / ".local" / "share" / "cvm"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_keyring() == tmp_path / "home" / ".local" / "share" / "cvm" / KEYRING_NAME


# How the keyring is written


def test_a_new_keyring_gets_its_missing_directories_private_and_a_private_file(
        tmp_path: Path, umask: None) -> None:
    keyring = Keyring(tmp_path / "a" / "b" / KEYRING_NAME)
    keyring.add(KEY, keep=False)
    assert _mode(tmp_path / "a" / "b") == 0o700
    assert _mode(keyring.path) == 0o600


def test_an_update_holds_the_exclusive_lock_beside_the_keyring(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = Keyring(tmp_path / KEYRING_NAME)
    locks: list[tuple[str, int]] = []

    def flock(handle: Any, operation: int) -> None:
        locks.append((handle.name, operation))

    monkeypatch.setattr(fcntl, "flock", flock)
    keyring.add(KEY, keep=False)
    assert locks == [(str(tmp_path / (KEYRING_NAME + ".lock")), fcntl.LOCK_EX)]


def test_a_new_key_starts_at_counter_zero_and_each_save_adds_one(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / KEYRING_NAME)
    keyring.add(KEY, keep=False)
    assert _entries(keyring) == {key_id(KEY).hex(): {"counter": 0}}
    keyring.add(KEY, keep=True)
    assert _entries(keyring) == {key_id(KEY).hex(): {"counter": 0, "key": KEY.hex()}}
    store = StateStore.manufacture(tmp_path / "state", keyring, OTHER)
    assert keyring.read_counter(key_id(OTHER)) == 1
    _, tpm, _ = StateStore.open(store.path, keyring, OTHER)
    store.save(tpm)
    assert keyring.read_counter(key_id(OTHER)) == 2


def test_a_counter_never_goes_back_and_an_unknown_key_has_none(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / KEYRING_NAME)
    keyring.add(KEY, keep=False)
    keyring.advance(key_id(KEY), 5)
    keyring.advance(key_id(KEY), 5)
    kid = key_id(KEY).hex()
    with pytest.raises(PolicyError) as refused:
        keyring.advance(key_id(KEY), 4)
    assert str(refused.value) == f"the counter of key {kid} cannot go back to 4"
    assert keyring.read_counter(key_id(KEY)) == 5
    other = key_id(OTHER).hex()
    with pytest.raises(PolicyError) as refused:
        keyring.advance(key_id(OTHER), 1)
    assert str(refused.value) == f"the counter of key {other} cannot go back to 1"
    with pytest.raises(PolicyError) as refused:
        keyring.read_counter(key_id(OTHER))
    assert str(refused.value) == (f"the keyring {keyring.path} holds no counter for key {other}:"
                                  f" the state file cannot be checked against rollback")


# Keys


def test_a_key_file_is_32_raw_bytes_or_64_hex_digits(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(KEY)
    assert read_key_file(path) == KEY
    path.write_text(f"  {KEY.hex().upper()}\n")
    assert read_key_file(path) == KEY
    for data in (KEY.hex()[:-2].encode(), b"\xff" * 64, b"zz" * 32):
        path.write_bytes(data)
        with pytest.raises(FormatError) as refused:
            read_key_file(path)
        assert str(refused.value) == (f"{path}: a state key is 32 raw bytes or 64 hex digits,"
                                      f" not {len(data)} bytes of something else")


@pytest.mark.parametrize("kept", [None, "zz" * 32, 7, OTHER.hex(), KEY.hex()[:-2]],
                         ids=["absent", "not hex", "not a string", "another key", "short"])
def test_a_keyring_that_keeps_no_usable_key_for_the_file_is_refused(
        tmp_path: Path, kept: Any) -> None:
    keyring = Keyring(tmp_path / KEYRING_NAME)
    state = tmp_path / "state"
    StateStore.manufacture(state, keyring)
    kid = StateFileHeader.parse(state.read_bytes()).key_id
    document = json.loads(keyring.path.read_text())
    if kept is None:
        del document["entries"][kid.hex()]["key"]
    else:
        document["entries"][kid.hex()]["key"] = kept
    keyring.path.write_text(json.dumps(document))
    with pytest.raises(UsageError) as refused:
        StateStore.open(state, keyring)
    assert str(refused.value) == (
        f"the keyring {keyring.path} keeps no key {kid.hex()} for this state file (was it made"
        f" with --key-file, or with another keyring?)")


# State files


def test_manufacturing_refuses_to_overwrite(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_bytes(b"anything")
    with pytest.raises(UsageError) as refused:
        StateStore.manufacture(state, Keyring(tmp_path / KEYRING_NAME), KEY)
    assert str(refused.value) == f"{state} exists; remove it first to make a new TPM identity"
    assert state.read_bytes() == b"anything"


def test_what_is_not_a_state_file_of_the_cvm_command_is_refused(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / KEYRING_NAME)
    state = tmp_path / "state"
    StateStore.manufacture(state, keyring, KEY)
    svsm_version = seal_state(b"\x00" * 8, UserKey(KEY, KeySource.PSP_DERIVED),
                              KeyringCounter(keyring, key_id(KEY)), os.urandom)
    for data in (b"\x00" * len(state.read_bytes()), svsm_version):
        state.write_bytes(data)
        with pytest.raises(FormatError) as refused:
            StateStore.open(state, keyring, KEY)
        assert str(refused.value) == f"{state}: not a vTPM state file of the cvm command"


def test_a_key_of_the_wrong_kind_is_refused_by_name(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / KEYRING_NAME)
    by_file, by_keyring = tmp_path / "by-file", tmp_path / "by-keyring"
    StateStore.manufacture(by_file, keyring, KEY)
    StateStore.manufacture(by_keyring, keyring)
    with pytest.raises(UsageError) as refused:
        StateStore.open(by_file, keyring)
    assert str(refused.value) == f"{by_file} is sealed under a key file: give --key-file"
    with pytest.raises(UsageError) as refused:
        StateStore.open(by_keyring, keyring, KEY)
    assert str(refused.value) == (f"{by_keyring} is sealed under a key of the keyring, not a "
                                  f"key file")
    with pytest.raises(IntegrityError, match=f"^{by_file}: vTPM state file was sealed under key"):
        StateStore.open(by_file, keyring, OTHER)


def test_a_payload_shorter_than_its_size_field_is_refused(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / KEYRING_NAME)
    state = tmp_path / "state"
    StateStore.manufacture(state, keyring, KEY)
    counter = KeyringCounter(keyring, key_id(KEY))
    for payload in ((5).to_bytes(4, "little") + b"four", (2).to_bytes(4, "little") + b"x"):
        sealed = seal_state(payload, UserKey(KEY, KeySource.KEY_FILE), counter, os.urandom)
        state.write_bytes(sealed)
        with pytest.raises(FormatError) as refused:
            StateStore.open(state, keyring, KEY)
        assert str(refused.value) == f"{state}: sealed payload is truncated"


def test_state_files_are_written_private(tmp_path: Path, umask: None) -> None:
    state = tmp_path / "state"
    StateStore.manufacture(state, Keyring(tmp_path / KEYRING_NAME), KEY)
    assert _mode(state) == 0o600
    plain = tmp_path / "plain"
    write_atomically(plain, b"data")
    assert _mode(plain) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_wall_clock_before_the_epoch_is_saved_as_zero(tmp_path: Path) -> None:
    state = tmp_path / "state"
    StateStore.manufacture(state, Keyring(tmp_path / KEYRING_NAME), KEY, clock=lambda: -5.0)
    assert StateFileHeader.parse(state.read_bytes()).saved_at_ms == 0


def test_the_manufactured_tpm_runs_on_the_stores_clock(tmp_path: Path) -> None:
    ticks = iter(range(1000, 10_000, 10))
    state = tmp_path / "state"
    keyring = Keyring(tmp_path / KEYRING_NAME)
    StateStore.manufacture(state, keyring, KEY, clock=lambda: float(next(ticks)))
    # the TPM boots at 1000 s and saves its clock at 1010 s, the store stamps it at 1020 s
    assert StateFileHeader.parse(state.read_bytes()).saved_at_ms == 1_020_000
    _, tpm, _ = StateStore.open(state, keyring, KEY, clock=lambda: 1020.0)
    assert tpm.state.clock_ms == 10_000


# The transport


def _attached(tmp_path: Path, locality: int | None = None) -> tuple[StateStore, Any, Any]:
    keyring = Keyring(tmp_path / KEYRING_NAME)
    store = StateStore.manufacture(tmp_path / "state", keyring, KEY)
    _, tpm, _ = StateStore.open(store.path, keyring, KEY)
    execute = store.attach(tpm) if locality is None else store.attach(tpm, locality)
    return store, tpm, execute


def test_a_command_that_changes_nothing_is_not_saved_and_one_that_does_is(
        tmp_path: Path) -> None:
    store, tpm, execute = _attached(tmp_path)
    client = TpmClient(execute)
    client.startup()
    assert tpm.changed is False
    after_startup = store.counter.read()
    client.get_random(8)
    client.get_random(8)
    assert store.counter.read() == after_startup
    assert tpm.changed is False


def test_the_transport_runs_at_locality_zero_unless_told(tmp_path: Path) -> None:
    _, tpm, execute = _attached(tmp_path)
    TpmClient(execute).startup()
    assert tpm.locality == 0
    (tmp_path / "three").mkdir()
    _, tpm, execute = _attached(tmp_path / "three", locality=3)
    TpmClient(execute).startup()
    assert tpm.locality == 3


def test_the_first_da_protected_authorization_is_saved_before_it_is_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _, execute = _attached(tmp_path)
    client = TpmClient(execute)
    client.startup()
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True))
    blob, public = client.create(srk, sealed_template(), data=b"secret", auth=b"pin")
    item = client.load(srk, blob, public)
    saves: list[tuple[bool, int]] = []
    save = store.save

    def recording(tpm: Any, volatile: bytes = b"") -> None:
        saves.append((tpm.state.da_used, tpm.state.failed_tries))
        save(tpm, volatile)

    monkeypatch.setattr(store, "save", recording)
    with pytest.raises(StatusError):
        client.unseal(item, Auth(b"guess"))
    # saved once the DA-protected authValue is first used, before the check; then the failure
    assert saves == [(True, 0), (True, 1)]
    _, again, _ = StateStore.open(store.path, store.counter.keyring, KEY)
    assert again.state.failed_tries == 1
