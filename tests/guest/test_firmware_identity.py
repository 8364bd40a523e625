"""The firmware measures itself as the owner predicts it does."""

from __future__ import annotations

from cvm.guest.boot.firmware import ovmf_model_settings
from cvm.image.firmware import build_firmware, firmware_settings


def test_the_firmware_measures_what_the_owner_predicts() -> None:
    images = build_firmware(b"\0" * 0x1000, with_svsm=False, seed=b"identity")
    assert ovmf_model_settings(images.ovmf) == firmware_settings(images.ovmf)
    other = build_firmware(b"\0" * 0x1000, with_svsm=False, seed=b"other")
    assert ovmf_model_settings(other.ovmf) != firmware_settings(images.ovmf)
