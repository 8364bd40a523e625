"""Fixtures of the attack tests that run one attack at a time on a VM of their own: the lab
bundles (one per test module) and ``labs(mode)``, a freshly booted VM closed after the test.
A module sets ``LAB_SEED`` to draw its own randomness (default 40)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from cvm.hardware.vm import Mode
from cvm.scenarios.attack_bundles import LabBundles, build_lab_bundles
from cvm.scenarios.boot_lab import BootLab

Labs = Callable[[Mode], BootLab]


def _seed(request: pytest.FixtureRequest) -> int:
    return int(getattr(request.module, "LAB_SEED", 40))


@pytest.fixture(scope="module")
def bundles(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabBundles]:
    yield build_lab_bundles(tmp_path_factory.mktemp("bundles"),
                            random.Random(_seed(request)).randbytes)


@pytest.fixture
def labs(request: pytest.FixtureRequest, bundles: LabBundles) -> Iterator[Labs]:
    """Booted VMs of any mode, each its own, closed after the test."""
    made: list[BootLab] = []
    seed = _seed(request) + 1

    def make(mode: Mode) -> BootLab:
        made.append(BootLab(mode, bundles, random.Random(f"{seed}/{mode.value}").randbytes))
        return made[-1]

    yield make
    for lab in made:
        lab.close()
