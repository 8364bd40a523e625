"""Image bundles built once per session: both chains, every mode, the fast recovery KDF."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.image.bundle import BuiltImage, ImageSpec, build_image
from cvm.image.firmware import MODES


@pytest.fixture(scope="session")
def built_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltImage]:
    """``{"uki": ..., "shim-grub": ...}``; the UKI seals with both a PCR and a signed token."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        "uki": build_image(root / "uki", ImageSpec(chain="uki", seal="both", modes=MODES,
                                                   kdf_cost="fast", seed=1)),
        "shim-grub": build_image(root / "shim-grub", ImageSpec(
            chain="shim-grub", modes=MODES, kdf_cost="fast", seed=2)),
    }


@pytest.fixture(params=["uki", "shim-grub"])
def built(request: pytest.FixtureRequest, built_images: dict[str, BuiltImage]) -> BuiltImage:
    """Each chain in turn."""
    return built_images[str(request.param)]


def bundle_file(built: BuiltImage, name: str) -> Path:
    return built.out / name
