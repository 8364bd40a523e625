"""The collateral cache on disk: public files (0644 less the umask), replaced whole, named per
chip and TCB, and only known products."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cvm.attestation.verifier.collateral import CollateralCache
from cvm.errors import UsageError
from cvm.formats.snp.tcb_version import TcbVersion

CHIP = bytes(range(64))
TCB = TcbVersion.from_bytes(bytes([3, 0, 0, 0, 0, 0, 8, 115]))


def test_cached_files_are_public_and_replace_a_private_file_whole(
        tmp_path: Path, umask: None) -> None:
    cache = CollateralCache(tmp_path / "collateral")
    cache.put_vcek(CHIP, TCB, b"first")
    cache.put_crl("Genoa", b"crl")
    for path in (tmp_path / "collateral").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
    vcek = next((tmp_path / "collateral").glob("vcek-*.der"))
    vcek.chmod(0o600)
    cache.put_vcek(CHIP, TCB, b"second")
    assert cache.vcek(CHIP, TCB) == b"second"
    assert stat.S_IMODE(vcek.stat().st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / "collateral").iterdir()) == sorted(
        [vcek.name, "crl-Genoa.der"])  # no temporary left beside them


def test_entries_are_per_chip_and_tcb(tmp_path: Path) -> None:
    cache = CollateralCache(tmp_path)
    cache.put_vcek(CHIP, TCB, b"vcek")
    other_tcb = TcbVersion.from_bytes(bytes([3, 0, 0, 0, 0, 0, 8, 116]))
    assert cache.vcek(CHIP, TCB) == b"vcek"
    assert cache.vcek(CHIP, other_tcb) is None
    assert cache.vcek(bytes(64), TCB) is None
    assert cache.crl("Milan") is None


def test_an_unknown_product_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as refused:
        CollateralCache(tmp_path).put_crl("Rome", b"crl")
    assert str(refused.value) == "unknown product 'Rome'; known: Milan, Genoa, Turin"
    assert not tmp_path.joinpath("crl-Rome.der").exists()


def test_a_cache_is_made_with_its_parent_folders(tmp_path: Path) -> None:
    CollateralCache(tmp_path / "relying-party" / "collateral").put_crl("Turin", b"crl")
    assert (tmp_path / "relying-party" / "collateral" / "crl-Turin.der").read_bytes() == b"crl"
