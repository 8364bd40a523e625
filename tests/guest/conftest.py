"""Image bundles for the guest tests, built once per session by the owner's builder."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.crypto.drbg import SeededRandom
from cvm.image.bundle import ImageSpec, build_image

ALL_MODES = ("plain", "sev", "sev-es", "sev-snp")


def _seeded(seed: bytes) -> Callable[[int], bytes]:
    return SeededRandom(seed)


@pytest.fixture(scope="session")
def uki_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A UKI image (signed PCR 11 policy) for every mode."""
    out = tmp_path_factory.mktemp("bundles") / "uki"
    build_image(out, ImageSpec(modes=ALL_MODES, kdf_cost="fast", seed=7))
    return out


@pytest.fixture(scope="session")
def shim_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shim → GRUB → kernel image (PCR 4+7+8+9 policy), SEV-SNP only."""
    out = tmp_path_factory.mktemp("bundles") / "shim"
    build_image(out, ImageSpec(chain="shim-grub", kdf_cost="fast", seed=8))
    return out


@pytest.fixture
def copy_bundle(tmp_path: Path) -> Callable[[Path], Path]:
    """A private copy of a bundle, for a test that edits its files."""
    def copy(bundle: Path) -> Path:
        target = tmp_path / bundle.name
        shutil.copytree(bundle, target)
        return target
    return copy


@pytest.fixture
def seeded() -> Callable[[bytes], Callable[[int], bytes]]:
    """Reproducible randomness for the guest: ``seeded(b"name")``."""
    return _seeded
