"""A boot whose vTPM state key comes from a key broker, as its trace tells it
(:meth:`cvm.guest.vm.GuestVm.start_svsm`, :func:`cvm.guest.run.boot_bundle` with ``kbs``): the
SVSM's attestation over RCAR and the broker's release, word for word, and the rollback counter
the broker holds — read at each boot, advanced when the state is stored."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvm.amd.pki import default_vendor
from cvm.attestation.kbs.broker import Broker, BrokerSettings
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.drbg import SeededRandom
from cvm.guest.run import boot_bundle
from cvm.image.bundle import ImageSpec, build_image
from cvm.image.kbs_registration import register

from .conftest import ADMIN_TOKEN, Clock, database_url, serving


@pytest.fixture(scope="module")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    image = tmp_path_factory.mktemp("kbs-steps") / "image"
    build_image(image, ImageSpec(kdf_cost="fast", seed=23))
    vendor = default_vendor("Milan")
    broker = Broker(Storage(database_url("sqlite", tmp_path_factory)), bytes(range(32)),
                    TrustRoots.of([vendor.trust_anchor()], "emulated"), clock=Clock(),
                    settings=BrokerSettings(session_ttl_seconds=60))
    with serving(broker) as url:
        register(image, url, ADMIN_TOKEN)
        yield url, image


def test_the_svsm_attests_to_the_broker_and_its_counter_moves_with_the_stored_state(
        broker_url: tuple[str, Path], tmp_path: Path) -> None:
    url, image = broker_url
    bundle = Path(shutil.copytree(image, tmp_path / "image"))
    vendor = default_vendor("Milan")
    opened = []
    for seed in (b"first", b"second"):
        trace = boot_bundle(bundle, "sev-snp", random=SeededRandom(seed), kbs=url,
                            vendor=vendor, store_state=True)
        assert trace.ok, trace.refused
        own = [(s.actor, s.verb, s.subject) for s in trace.steps if s.pcr is None]
        assert own[2:4] == [
            ("SVSM", "attested", "to the key broker through the host (RCAR: launch evidence, "
                                 "SNP report at VMPL0, REPORT_DATA = SHA-384(nonce, TEE key))"),
            ("key broker", "released", "the vTPM state key, a JWE to the SVSM's TEE key")]
        opened.append(own[4])
    assert opened == [("SVSM", "opened", "the vTPM state (rollback counter 1)"),
                      ("SVSM", "opened", "the vTPM state (rollback counter 2)")]


def test_the_resource_named_is_the_one_asked_for(broker_url: tuple[str, Path],
                                                 tmp_path: Path) -> None:
    url, image = broker_url
    bundle = Path(shutil.copytree(image, tmp_path / "image"))
    trace = boot_bundle(bundle, "sev-snp", random=SeededRandom(b"other"), kbs=url,
                        vendor=default_vendor("Milan"), kbs_resource="default/vtpm/other")
    assert trace.refused is not None and trace.refused[0] == "svsm"
    assert "default/vtpm/other" in str(trace.refused[1])
