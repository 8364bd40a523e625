"""The emulated AMD root store's decisions, each pinned: where it lives, what it refuses (with
the message that names the file), how it pins, locks and writes. Roots here come from fixed
test keys (``fresh_keys``), so making several costs milliseconds."""

from __future__ import annotations

import fcntl
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cvm.amd import root_store
from cvm.amd.authority import generate_root
from cvm.amd.root_store import RootStore, data_home, workspace_directory
from cvm.errors import IntegrityError, StateError, UsageError

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path, fresh_keys: list[int]) -> RootStore:
    made = RootStore(tmp_path / "a" / "b" / "store")
    made.root("Milan", create=True)
    return made


def _message(error: pytest.ExceptionInfo[Exception]) -> str:
    return str(error.value)


def test_data_home_falls_back_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert data_home({"XDG_DATA_HOME": "", "HOME": "/h"}) == Path("/h/.local/share")
    assert data_home({"XDG_DATA_HOME": "rel/ative", "HOME": "/h"}) == Path("/h/.local/share")
    assert data_home({"XDG_DATA_HOME": "/x"}) == Path("/x")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_home({}) == tmp_path / ".local" / "share"
    assert data_home({"HOME": ""}) == tmp_path / ".local" / "share"
    # Without an explicit environment, the process's own.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_home() == tmp_path / "xdg"
    assert RootStore.for_workspace().directory == tmp_path / "xdg/cvm/emulated-amd/default"
    assert RootStore.for_workspace("w", {"XDG_DATA_HOME": "/d"}).directory == Path(
        "/d/cvm/emulated-amd/w"
    )


def test_workspace_names() -> None:
    for good in ("a", "9", "a.b_c-d", "x" * 64):
        assert workspace_directory(good, {"XDG_DATA_HOME": "/x"}).name == good
    for bad in ("-a", "_a", "a b", "x" * 65, "a\n"):
        with pytest.raises(UsageError) as caught:
            workspace_directory(bad, {"XDG_DATA_HOME": "/x"})
        assert _message(caught) == (
            f"workspace name {bad!r}: letters, digits, '.', '_' and '-', starting with a "
            "letter or digit, at most 64 characters"
        )


def test_a_new_store_is_private_from_its_creation(
    tmp_path: Path, fresh_keys: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = os.umask(0)
    try:
        made = RootStore(tmp_path / "parents" / "made" / "store")
        made.root("Milan", create=True)
    finally:
        os.umask(before)
    assert stat.S_IMODE(made.directory.stat().st_mode) == 0o700
    for path in made.directory.iterdir():
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600, path.name
    assert not list(made.directory.glob(".*.tmp"))
    assert len(made.seed()) == 32
    assert made.seed() != RootStore(tmp_path / "other").vendor(
        "Milan", create=True
    ).authority.seed


def test_an_existing_directory_others_can_enter_is_refused(
    tmp_path: Path, fresh_keys: list[int]
) -> None:
    directory = tmp_path / "open"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    with pytest.raises(IntegrityError) as caught:
        RootStore(directory).root("Milan", create=True)
    assert _message(caught) == (
        f"{directory}: mode 0755 lets other users at the emulated AMD keys (expected 0700; "
        "chmod it, or make a new workspace)"
    )
    assert fresh_keys == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o602, 0o620, 0o601, 0o610])
def test_a_file_others_can_touch_is_refused(store: RootStore, mode: int) -> None:
    (store.directory / "Milan-ask.key.pem").chmod(mode)
    with pytest.raises(IntegrityError) as caught:
        store.root("Milan")
    assert _message(caught) == (
        f"{store.directory / 'Milan-ask.key.pem'}: mode {mode:04o} lets other users at the "
        "emulated AMD keys (expected 0600; chmod it, or make a new workspace)"
    )


def test_a_store_directory_opened_up_later_is_refused(store: RootStore) -> None:
    store.directory.chmod(0o750)
    with pytest.raises(IntegrityError) as caught:
        store.trust_anchors()
    assert _message(caught) == (
        f"{store.directory}: mode 0750 lets other users at the emulated AMD keys (expected "
        "0700; chmod it, or make a new workspace)"
    )


def test_owner_only_modes_are_accepted(store: RootStore) -> None:
    (store.directory / "seed").chmod(0o400)
    assert len(store.seed()) == 32
    store.directory.chmod(0o500)
    try:
        assert store.trust_anchors()[0][0] == "Milan"
    finally:
        store.directory.chmod(0o700)


def test_a_symbolic_link_is_refused_by_name(store: RootStore, tmp_path: Path) -> None:
    target = tmp_path / "seed-elsewhere"
    target.write_bytes(bytes(32))
    target.chmod(0o600)
    (store.directory / "seed").unlink()
    (store.directory / "seed").symlink_to(target)
    with pytest.raises(IntegrityError) as caught:
        store.seed()
    assert _message(caught) == (
        f"{store.directory / 'seed'}: a symbolic link in the emulated AMD root store"
    )


def test_a_store_not_made_yet(tmp_path: Path) -> None:
    empty = RootStore(tmp_path / "none")
    assert not empty.exists()
    for call in (empty.pins, empty.seed, lambda: empty.root("Genoa")):
        with pytest.raises(StateError) as caught:
            call()
        assert _message(caught) == (
            f"no emulated AMD root in {empty.directory} yet; 'cvm report emulated-root' "
            "makes one"
        )
    # A directory with a pins.json that is a directory is not a store either.
    (empty.directory / "pins.json").mkdir(parents=True)
    assert not empty.exists()


def test_a_product_not_made_yet(store: RootStore) -> None:
    with pytest.raises(StateError) as caught:
        store.root("genoa")
    assert _message(caught) == (
        f"no emulated Genoa root in {store.directory} yet; "
        "'cvm report emulated-root --product Genoa' makes one"
    )


def test_the_lock_is_exclusive_and_released(
    tmp_path: Path, fresh_keys: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[tuple[int, int]] = []
    real_flock = fcntl.flock

    def flock(descriptor: int, operation: int) -> None:
        taken.append((descriptor, operation))
        real_flock(descriptor, operation)

    monkeypatch.setattr(root_store.fcntl, "flock", flock)
    made = RootStore(tmp_path / "store")
    made.root("Milan", create=True)
    assert [operation for _, operation in taken] == [fcntl.LOCK_EX]
    with pytest.raises(OSError):  # closed once the root is made
        os.fstat(taken[0][0])
    # While a root is made, nobody else may even share the lock; afterwards anyone may.
    with open(made.directory / ".lock", "rb") as other:
        with made._creating(), pytest.raises(BlockingIOError):
            real_flock(other.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        real_flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_failure_while_creating_releases_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    real_open = os.open

    def spy(path: object, flags: int, mode: int = 0o777) -> int:
        descriptor = real_open(path, flags, mode)  # type: ignore[arg-type]
        opened.append(descriptor)
        return descriptor

    def broken() -> None:
        raise OSError("disk full")

    made = RootStore(tmp_path / "store")
    monkeypatch.setattr(root_store.os, "open", spy)
    monkeypatch.setattr(made, "_create", broken)
    with pytest.raises(OSError, match="disk full"):
        made.root("Milan", create=True)
    assert opened
    for descriptor in opened:
        with pytest.raises(OSError):
            os.fstat(descriptor)


def test_the_seed_and_pins_are_made_once(store: RootStore, fresh_keys: list[int]) -> None:
    seed = store.seed()
    assert json.loads((store.directory / "pins.json").read_bytes()).keys() == {"Milan"}
    again = store.root("Milan", create=True)
    assert store.seed() == seed and len(fresh_keys) == 2  # loaded, not made again
    assert again.fingerprint() == store.trust_anchors()[0][1]


def test_an_empty_store_has_empty_pins(tmp_path: Path) -> None:
    made = RootStore(tmp_path / "store")
    with made._creating():
        assert (made.directory / "pins.json").read_bytes() == b"{}\n"
    assert made.pins() == {} and made.trust_anchors() == []


def test_a_stale_temporary_file_does_not_block_a_write(tmp_path: Path) -> None:
    """The store writes through cvm.files: a fresh temporary name each time, 0600."""
    (tmp_path / ".seed.tmp").write_bytes(b"left over")
    root_store.write_atomically(tmp_path / "seed", b"new")
    assert (tmp_path / "seed").read_bytes() == b"new"
    assert stat.S_IMODE((tmp_path / "seed").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".seed.tmp", "seed"]


def test_pins_are_written_sorted_and_trusted_sorted(
    store: RootStore, fresh_keys: list[int]
) -> None:
    genoa = store.root("Genoa", create=True)
    milan = store.root("Milan")
    pins = {"Genoa": genoa.fingerprint(), "Milan": milan.fingerprint()}
    assert (store.directory / "pins.json").read_bytes() == (
        json.dumps(pins, indent=2, sort_keys=True).encode() + b"\n"
    )
    assert store.trust_anchors() == [("Genoa", pins["Genoa"]), ("Milan", pins["Milan"])]
    assert genoa.fingerprint() != milan.fingerprint()
    names = sorted(path.name for path in store.directory.iterdir())
    assert names == [".lock", "Genoa-ark.der", "Genoa-ark.key.pem", "Genoa-ask.der",
                     "Genoa-ask.key.pem", "Milan-ark.der", "Milan-ark.key.pem",
                     "Milan-ask.der", "Milan-ask.key.pem", "pins.json", "seed"]


@pytest.mark.parametrize(
    "pins",
    ['["Milan"]', '{"Naples": "00"}', '{"Milan": 1}', '{"milan": "00"}', '"Milan"'],
)
def test_pins_that_are_not_a_product_map_are_refused(store: RootStore, pins: str) -> None:
    (store.directory / "pins.json").write_text(pins)
    with pytest.raises(IntegrityError) as caught:
        store.pins()
    assert _message(caught) == (
        f"{store.directory / 'pins.json'}: not a map of product to fingerprint"
    )


def test_pins_that_are_not_json_are_refused(store: RootStore) -> None:
    (store.directory / "pins.json").write_bytes(b"\xff{")
    with pytest.raises(IntegrityError) as caught:
        store.pins()
    assert _message(caught) == f"{store.directory / 'pins.json'}: not JSON"


@pytest.mark.parametrize("size", [0, 31, 33])
def test_a_seed_of_the_wrong_size_is_refused(store: RootStore, size: int) -> None:
    (store.directory / "seed").write_bytes(bytes(size))
    with pytest.raises(IntegrityError) as caught:
        store.seed()
    assert _message(caught) == f"{store.directory / 'seed'}: not 32 bytes"


def test_the_vendor_is_the_stores(store: RootStore) -> None:
    vendor = store.vendor("milan", clock=lambda: ISSUED)
    assert vendor.product.name == "Milan"
    assert vendor.authority.seed == store.seed()
    assert vendor.authority.clock() == ISSUED
    assert vendor.ark_fingerprint() == dict(store.trust_anchors())["Milan"]
    with pytest.raises(StateError, match="--product Turin"):
        store.vendor("Turin")


def test_a_loaded_root_is_the_stored_one(store: RootStore) -> None:
    root = store.root("Milan")
    assert root.product.name == "Milan"
    assert root.ark_certificate == (store.directory / "Milan-ark.der").read_bytes()
    assert root.ask_certificate == (store.directory / "Milan-ask.der").read_bytes()
    assert root.ark_key.private_numbers() != root.ask_key.private_numbers()


def test_another_ark_is_refused_naming_both_fingerprints(
    store: RootStore, fresh_keys: list[int]
) -> None:
    pinned = store.trust_anchors()[0][1]
    other = generate_root("Milan")
    (store.directory / "Milan-ark.der").write_bytes(other.ark_certificate)
    with pytest.raises(IntegrityError) as caught:
        store.root("Milan")
    assert _message(caught) == (
        f"{store.directory}: the Milan ARK is not the pinned one "
        f"(pinned {pinned}, found {other.fingerprint()})"
    )


def test_the_ark_certificates_are_the_pinned_ones(store: RootStore,
                                                   fresh_keys: list[int]) -> None:
    """What a relying party checks CRLs with: each pinned product's ARK, no key read."""
    store.root("Genoa", create=True)
    (store.directory / "Genoa-ark.key.pem").write_bytes(b"not a key")
    assert store.ark_certificates() == [(store.directory / "Genoa-ark.der").read_bytes(),
                                        store.root("Milan").ark_certificate]
    (store.directory / "Milan-ark.der").write_bytes(generate_root("Milan").ark_certificate)
    with pytest.raises(IntegrityError) as caught:
        store.ark_certificates()
    assert _message(caught) == f"{store.directory}: the Milan ARK is not the pinned one"
    (store.directory / "Genoa-ark.der").chmod(0o644)
    with pytest.raises(IntegrityError, match=r"Genoa-ark\.der: mode 0644"):
        store.ark_certificates()


def _repin(store: RootStore) -> None:
    import hashlib

    ark = (store.directory / "Milan-ark.der").read_bytes()
    pins = {"Milan": hashlib.sha256(ark).hexdigest()}
    (store.directory / "pins.json").write_text(json.dumps(pins))


def test_keys_that_are_not_the_certified_ones_are_refused(
    store: RootStore, fresh_keys: list[int]
) -> None:
    ark_key = (store.directory / "Milan-ark.key.pem").read_bytes()
    ask_key = (store.directory / "Milan-ask.key.pem").read_bytes()
    (store.directory / "Milan-ark.key.pem").write_bytes(ask_key)
    with pytest.raises(IntegrityError) as caught:
        store.root("Milan")
    assert _message(caught) == f"{store.directory}: the Milan ARK key is not the certified one"
    (store.directory / "Milan-ark.key.pem").write_bytes(ark_key)
    (store.directory / "Milan-ask.key.pem").write_bytes(ark_key)
    with pytest.raises(IntegrityError) as caught:
        store.root("Milan")
    assert _message(caught) == f"{store.directory}: the Milan ASK key is not the certified one"


def test_an_ark_that_is_not_self_signed_is_refused(store: RootStore) -> None:
    """The ARK's own signature broken (and re-pinned): only the self-signature check sees it;
    the ASK still verifies under the ARK's key."""
    ark = bytearray((store.directory / "Milan-ark.der").read_bytes())
    ark[-1] ^= 1
    (store.directory / "Milan-ark.der").write_bytes(bytes(ark))
    _repin(store)
    with pytest.raises(IntegrityError) as caught:
        store.root("Milan")
    assert _message(caught) == (
        f"{store.directory}: ARK-Milan-emulated <- ARK-Milan-emulated: the certificate "
        "signature does not verify"
    )


def test_an_ask_the_ark_did_not_sign_is_refused(store: RootStore) -> None:
    ask = bytearray((store.directory / "Milan-ask.der").read_bytes())
    ask[-1] ^= 1
    (store.directory / "Milan-ask.der").write_bytes(bytes(ask))
    with pytest.raises(IntegrityError) as caught:
        store.root("Milan")
    assert _message(caught) == (
        f"{store.directory}: SEV-Milan-emulated <- ARK-Milan-emulated: the certificate "
        "signature does not verify"
    )
