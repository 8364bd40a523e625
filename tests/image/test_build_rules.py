"""The build's own rules: the recovery KDF, what it refuses to build, and the owner's keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.errors import FormatError, InternalError, PolicyError, UsageError
from cvm.image import bundle
from cvm.image.bundle import BuiltImage, ImageSpec, build_image, recovery_kdf
from cvm.image.keys import OwnerKeys
from cvm.image.pcr_prediction import PcrPrediction


def test_the_recovery_kdf_is_cryptsetups_default_unless_fast_is_asked() -> None:
    default = recovery_kdf("default")
    assert default.type == "argon2id" and default.iterations is None
    assert default.memory_kib == 262144 and default.iter_time_ms == 2000
    fast = recovery_kdf("fast")
    assert fast.type == "pbkdf2" and fast.iterations == 1000
    with pytest.raises(UsageError):
        recovery_kdf("cheap")


def test_a_dbx_that_revokes_the_loader_is_refused_at_build(
        tmp_path: Path, built_images: dict[str, BuiltImage]) -> None:
    built = built_images["shim-grub"]
    loader = next(s for s in built.chain.stages if s.name == "shim")
    assert loader.authenticode_sha256 is not None
    # The owner's keys again: the rebuilt shim is byte-identical, so its hash is revoked.
    spec = ImageSpec(chain="shim-grub", kdf_cost="fast",
                     extra_dbx=(loader.authenticode_sha256,))
    with pytest.raises(PolicyError, match="refused"):
        build_image(tmp_path / "img", spec, built.keys)


def test_a_prediction_that_disagrees_with_the_run_stops_the_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        built_images: dict[str, BuiltImage]) -> None:
    genuine = bundle.predict

    def skewed(*args: object, **kwargs: object) -> PcrPrediction:
        prediction = genuine(*args, **kwargs)  # type: ignore[arg-type]
        prediction.add(4, "an event the boot does not make", b"x")
        return prediction

    monkeypatch.setattr(bundle, "predict", skewed)
    with pytest.raises(InternalError, match="disagree"):
        build_image(tmp_path / "img", ImageSpec(kdf_cost="fast"), built_images["uki"].keys)
    assert not (tmp_path / "img" / "disk.img").exists()


def test_keys_without_what_the_chain_needs_are_refused(
        tmp_path: Path, built_images: dict[str, BuiltImage]) -> None:
    uki_keys = built_images["uki"].keys  # no shim vendor key
    with pytest.raises(UsageError, match="vendor"):
        build_image(tmp_path / "a", ImageSpec(chain="shim-grub", kdf_cost="fast"), uki_keys)
    grub_keys = built_images["shim-grub"].keys  # no PCR-policy key
    with pytest.raises(UsageError, match="PCR-policy"):
        build_image(tmp_path / "b", ImageSpec(chain="uki", kdf_cost="fast"), grub_keys)


def test_owner_keys_load_refuses_what_is_not_theirs(
        tmp_path: Path, built_images: dict[str, BuiltImage]) -> None:
    owner = tmp_path / "owner"
    built_images["uki"].keys.save(owner)
    assert OwnerKeys.load(owner).provisioning == built_images["uki"].keys.provisioning
    (owner / "provisioning.key").write_bytes(b"short")
    with pytest.raises(FormatError, match="provisioning"):
        OwnerKeys.load(owner)
    (owner / "db.key").unlink()
    with pytest.raises(UsageError, match=r"db\.key"):
        OwnerKeys.load(owner)


@pytest.mark.parametrize(("field", "value", "says"), [
    ("schema", "cvm-image/3", "schema"),
    ("seeded", "yes", "seeded"),
    ("chain", "grub", "chain"),
    ("modes", ["tdx"], "modes"),
    ("modes", [], "modes"),
    ("stages", [{"name": "uki"}], "stages"),
    ("disk", {"esp": {"offset": -1, "size": 1}, "root": {"offset": 0, "size": 1}}, "disk.esp"),
    ("disk", {"esp": {"offset": 0, "size": 1}}, "disk.root"),
    ("extra", 1, "fields"),
])
def test_the_manifest_loader_refuses_malformed_manifests(
        tmp_path: Path, built_images: dict[str, BuiltImage], field: str, value: object,
        says: str) -> None:
    import json

    document = dict(built_images["uki"].manifest)
    document[field] = value
    (tmp_path / "image.json").write_text(json.dumps(document))
    with pytest.raises(FormatError, match=says):
        bundle.load_manifest(tmp_path)
    (tmp_path / "image.json").write_text("not json")
    with pytest.raises(FormatError):
        bundle.load_manifest(tmp_path)
