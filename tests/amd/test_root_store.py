"""An installation's own emulated AMD roots: made once, kept private, pinned by fingerprint."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cvm.amd import EmulatedRoot, Vendor, derive_vcek_private_key, ephemeral_root, generate_root
from cvm.amd.root_store import RootStore, data_home, workspace_directory
from cvm.attestation.verifier import Evidence, TrustRoots, Verifier
from cvm.crypto import amd_ecdsa
from cvm.crypto.rsa_pss import private_key_to_pem
from cvm.errors import ChainError, IntegrityError, StateError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.tcb_version import TcbVersion

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
TCB = TcbVersion(boot_loader=4, snp=22, microcode=213)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[RootStore, EmulatedRoot]:
    store = RootStore(tmp_path_factory.mktemp("data") / "cvm" / "emulated-amd" / "default")
    return store, store.root("Milan", create=True)


def _evidence(vendor: Vendor) -> Evidence:
    chip = vendor.manufacture_chip(0)
    report = AttestationReport(
        version=3, cpuid_fam_id=0x19, cpuid_mod_id=1, chip_id=chip.chip_id,
        reported_tcb=TCB, current_tcb=TCB, committed_tcb=TCB, launch_tcb=TCB,
    )
    key = derive_vcek_private_key(chip.chip_secret, TCB, "Milan")
    signed = report.with_signature(*amd_ecdsa.sign(key, report.signed_bytes())).to_bytes()
    return Evidence(signed, vendor.vcek_certificate(chip.chip_id, TCB),
                    vendor.ask_certificate, vendor.ark_certificate)


def test_the_store_is_private_and_pinned(made: tuple[RootStore, EmulatedRoot]) -> None:
    store, root = made
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    names = sorted(path.name for path in store.directory.iterdir())
    assert names == [".lock", "Milan-ark.der", "Milan-ark.key.pem", "Milan-ask.der",
                     "Milan-ask.key.pem", "pins.json", "seed"]
    for path in store.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert store.trust_anchors() == [("Milan", root.fingerprint())]
    assert (store.directory / "Milan-ark.der").read_bytes() == root.ark_certificate


def test_made_once_then_loaded(made: tuple[RootStore, EmulatedRoot]) -> None:
    store, root = made
    again = RootStore(store.directory).root("Milan", create=True)
    assert again.fingerprint() == root.fingerprint()
    assert again.ask_certificate == root.ask_certificate
    assert store.root("milan").fingerprint() == root.fingerprint()
    assert len(store.seed()) == 32


def test_the_stores_vendor_is_trusted_by_its_pins_only(
    made: tuple[RootStore, EmulatedRoot]
) -> None:
    store, root = made
    vendor = store.vendor("Milan", clock=lambda: ISSUED)
    assert vendor.ark_certificate == root.ark_certificate
    evidence = _evidence(vendor)
    at = datetime(2026, 6, 1, tzinfo=UTC)
    verified = Verifier(TrustRoots.of(store.trust_anchors()), clock=lambda: at).verify(evidence)
    assert verified.chain.ark_fingerprint == root.fingerprint()
    # The process's ephemeral root (what the demo uses) is another root entirely.
    other = Verifier(TrustRoots.of([("Milan", ephemeral_root("Milan").fingerprint())]),
                     clock=lambda: at)
    with pytest.raises(ChainError, match="not among the trusted roots"):
        other.verify(evidence)
    # The chips of an installation are its own too: secrets from its seed, not a constant.
    assert vendor.manufacture_chip(0) != Vendor("Milan").manufacture_chip(0)


def test_roots_are_generated_not_derived() -> None:
    assert generate_root("Milan").fingerprint() != generate_root("Milan").fingerprint()
    assert ephemeral_root("Milan") is ephemeral_root("Milan")
    with pytest.raises(UsageError, match="Genoa's, not Milan's"):
        Vendor("Milan", root=ephemeral_root("Genoa"))


def test_missing_store_or_product_is_a_state_error(
    tmp_path: Path, made: tuple[RootStore, EmulatedRoot]
) -> None:
    with pytest.raises(StateError, match="emulated-root"):
        RootStore(tmp_path / "none").trust_anchors()
    with pytest.raises(StateError, match="--product Turin"):
        made[0].root("Turin")


def _copy(store: RootStore, target: Path) -> RootStore:
    target.mkdir(mode=0o700)
    for path in store.directory.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
        (target / path.name).chmod(0o600)
    return RootStore(target)


def test_a_tampered_store_is_refused(
    tmp_path: Path, made: tuple[RootStore, EmulatedRoot]
) -> None:
    store, root = made
    other = generate_root("Milan")
    # Another ARK in place of the pinned one.
    swapped = _copy(store, tmp_path / "ark")
    (swapped.directory / "Milan-ark.der").write_bytes(other.ark_certificate)
    with pytest.raises(IntegrityError, match="not the pinned one"):
        swapped.root("Milan")
    # The pin rewritten too: the ARK's key is no longer the certified one.
    (swapped.directory / "pins.json").write_text(json.dumps({"Milan": other.fingerprint()}))
    with pytest.raises(IntegrityError, match="ARK key is not the certified one"):
        swapped.root("Milan")
    # Another ASK key.
    ask = _copy(store, tmp_path / "ask")
    (ask.directory / "Milan-ask.key.pem").write_bytes(
        (store.directory / "Milan-ark.key.pem").read_bytes()
    )
    with pytest.raises(IntegrityError, match="ASK key is not the certified one"):
        ask.root("Milan")
    # An ASK certificate (with its key) that the ARK did not sign.
    foreign = _copy(store, tmp_path / "foreign")
    (foreign.directory / "Milan-ask.der").write_bytes(other.ask_certificate)
    (foreign.directory / "Milan-ask.key.pem").write_bytes(private_key_to_pem(other.ask_key))
    with pytest.raises(IntegrityError, match="does not verify"):
        foreign.root("Milan")
    # Pins that are not a product map.
    pins = _copy(store, tmp_path / "pins")
    (pins.directory / "pins.json").write_text('{"Naples": "00"}')
    with pytest.raises(IntegrityError, match="product to fingerprint"):
        pins.trust_anchors()
    (pins.directory / "pins.json").write_text("not json")
    with pytest.raises(IntegrityError, match="not JSON"):
        pins.trust_anchors()
    seed = _copy(store, tmp_path / "seed")
    (seed.directory / "seed").write_bytes(b"short")
    with pytest.raises(IntegrityError, match="not 32 bytes"):
        seed.seed()
    assert root.fingerprint() == store.root("Milan").fingerprint()


def test_a_store_others_can_read_is_refused(
    tmp_path: Path, made: tuple[RootStore, EmulatedRoot]
) -> None:
    store = _copy(made[0], tmp_path / "open")
    (store.directory / "Milan-ark.key.pem").chmod(0o644)
    with pytest.raises(IntegrityError, match="mode 0644"):
        store.root("Milan")
    (store.directory / "Milan-ark.key.pem").chmod(0o600)
    store.directory.chmod(0o750)
    with pytest.raises(IntegrityError, match="mode 0750"):
        store.trust_anchors()
    store.directory.chmod(0o700)
    (store.directory / "Milan-ark.der").unlink()
    (store.directory / "Milan-ark.der").symlink_to(made[0].directory / "Milan-ark.der")
    with pytest.raises(IntegrityError, match="symbolic link"):
        store.root("Milan")


def test_workspace_directory_follows_xdg() -> None:
    assert data_home({"XDG_DATA_HOME": "/x/data", "HOME": "/h"}) == Path("/x/data")
    assert data_home({"XDG_DATA_HOME": "relative", "HOME": "/h"}) == Path("/h/.local/share")
    assert data_home({"HOME": "/h"}) == Path("/h/.local/share")
    assert workspace_directory("lab-1", {"XDG_DATA_HOME": "/x"}) == Path(
        "/x/cvm/emulated-amd/lab-1"
    )
    for bad in ("", "../up", ".hidden", "a/b", "x" * 65):
        with pytest.raises(UsageError, match="workspace name"):
            workspace_directory(bad, {"XDG_DATA_HOME": "/x"})
