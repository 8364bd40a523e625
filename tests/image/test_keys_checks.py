"""The owner's keys on disk: the ``owner/`` folder is the owner's alone (0700) and every private
file is created 0600 — not written readable and narrowed afterwards, which leaves a moment in
which another local user can open it — and what is saved loads back."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cvm.image.keys import OwnerKeys

PRIVATE = {"pk.key", "kek.key", "db.key", "vendor.key", "pcr-policy.key", "provisioning.key"}
PUBLIC = {"README", "pk.crt", "kek.crt", "db.crt", "vendor.crt", "pcr-policy.pem"}


@pytest.fixture(scope="module")
def keys() -> OwnerKeys:
    return OwnerKeys.generate(os.urandom)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_owner_folder_and_its_private_files_are_the_owners_alone(
        keys: OwnerKeys, tmp_path: Path, umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "bundle" / "owner"
    # Narrowing a file after writing it is what this refuses: with chmod doing nothing, each
    # private file must still have been created 0600.
    real_chmod = Path.chmod

    def chmod(path: Path, mode: int, **options: object) -> None:
        if path.is_dir():
            real_chmod(path, mode)
    monkeypatch.setattr(Path, "chmod", chmod)
    keys.save(folder)
    assert {p.name for p in folder.iterdir()} == PRIVATE | PUBLIC
    assert _mode(folder) == 0o700
    for name in PRIVATE:
        assert _mode(folder / name) == 0o600, name
    for name in PUBLIC:
        assert _mode(folder / name) == 0o644, name


def test_an_existing_owner_folder_is_narrowed_and_its_keys_replaced(
        keys: OwnerKeys, tmp_path: Path, umask: None) -> None:
    folder = tmp_path / "owner"
    folder.mkdir(mode=0o755)
    (folder / "db.key").write_bytes(b"an old key")
    (folder / "db.key").chmod(0o644)
    keys.save(folder)
    assert _mode(folder) == 0o700 and _mode(folder / "db.key") == 0o600
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    loaded = OwnerKeys.load(folder)
    assert loaded.provisioning == keys.provisioning
    assert loaded.db.certificate == keys.db.certificate
    assert loaded.pcr_policy_public_pem() == keys.pcr_policy_public_pem()


def test_the_built_bundles_secret_files_are_created_private(
        tmp_path: Path, umask: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recovery key is created 0600 inside the 0700 ``owner/``; with ``chmod`` made a no-op
    a file written readable and narrowed afterwards would stay 0644."""
    import random

    from cvm.image.bundle import ImageSpec, build_image

    monkeypatch.setattr(Path, "chmod", lambda self, mode, **_: None)
    built = build_image(tmp_path / "img", ImageSpec(kdf_cost="fast"),
                        random=random.Random(5).randbytes)
    assert _mode(built.out / "owner" / "recovery.key") == 0o600
