"""The owner's firmware images and the launch digest predicted per mode
(`cvm.image.firmware`), and the vCPU signatures (`cvm.image.vcpu_types`)."""

from __future__ import annotations

import pytest

from cvm.errors import UsageError
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.svsm.svsm_image import SvsmImage, build_svsm_image, svsm_end_gpa
from cvm.guest.boot.firmware import OVMF_MODEL_CRTM_VERSION, ovmf_model_settings
from cvm.image.firmware import (
    CRTM_VERSION,
    DEFAULT_VCPU_TYPE,
    FOUR_GIB,
    MODES,
    OVMF_SIZE,
    SVSM_SIZE,
    FirmwareImages,
    build_firmware,
    firmware_settings,
    launch_digest,
    vcpu_config,
)
from cvm.image.measurement import VcpuConfig, sev_es_launch_digest, sev_launch_digest
from cvm.image.svsm_measurement import svsm_launch_digest
from cvm.image.vcpu_types import VCPU_SIGNATURES, cpu_signature, vcpu_signature

SECTIONS = [
    MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
    MetadataSection(0x80F000, 0x1000, SectionType.SVSM_CAA),
]
VARS = bytes(0x2000)


def test_the_constants() -> None:
    assert MODES == ("plain", "sev", "sev-es", "sev-snp")
    assert (OVMF_SIZE, SVSM_SIZE, FOUR_GIB) == (0x40000, 0x20000, 0x1_0000_0000)
    assert CRTM_VERSION == OVMF_MODEL_CRTM_VERSION and DEFAULT_VCPU_TYPE == "EPYC-Milan"


@pytest.fixture(scope="module")
def images() -> FirmwareImages:
    return build_firmware(VARS, with_svsm=True)


def test_the_images_are_built_from_the_seed_with_the_firmware_sections(
    images: FirmwareImages,
) -> None:
    assert images.ovmf == build_image(0x40000, sections=SECTIONS, seed=b"cvm OVMF")
    assert images.svsm == build_svsm_image(0x20000, sections=SECTIONS, seed=b"cvm OVMF SVSM")
    assert images.vars == VARS
    other = build_firmware(b"v", with_svsm=False, seed=b"other")
    assert other.ovmf == build_image(0x40000, sections=SECTIONS, seed=b"other")
    assert other.svsm is None and other.vars == b"v"


def test_the_firmware_measures_itself_as_the_ovmf_model(images: FirmwareImages) -> None:
    settings = firmware_settings(images.ovmf)
    assert settings == ovmf_model_settings(images.ovmf)
    assert settings.firmware_volumes == ((FOUR_GIB - OVMF_SIZE, images.ovmf),)


def test_the_vcpu_count_is_1_to_64() -> None:
    assert vcpu_config(1) == VcpuConfig(1, 0x00A00F11)
    assert vcpu_config(64, "EPYC-Rome") == VcpuConfig(64, 0x00830F10)
    for count in (0, 65, -1):
        with pytest.raises(UsageError) as caught:
            vcpu_config(count)
        assert str(caught.value) == f"--vcpus: {count} is not between 1 and 64"


def test_each_mode_has_its_launch_digest(images: FirmwareImages) -> None:
    ovmf = OvmfImage.parse(images.ovmf)
    vcpus = VcpuConfig(2, 0x00A00F11)
    assert launch_digest("plain", images, vcpus) is None
    assert launch_digest("sev", images, vcpus) == sev_launch_digest(ovmf)
    assert launch_digest("sev-es", images, vcpus) == sev_es_launch_digest(ovmf, vcpus)
    assert images.svsm is not None
    svsm = SvsmImage.parse(images.svsm, end_gpa=svsm_end_gpa(ovmf, len(VARS)))
    snp = launch_digest("sev-snp", images, vcpus)
    assert snp == svsm_launch_digest(ovmf, svsm, vcpus)
    assert snp is not None and len(snp) == 48
    assert launch_digest("sev-es", images, VcpuConfig(3, 0x00A00F11)) != launch_digest(
        "sev-es", images, vcpus)
    # the SVSM ends below the varstore: another varstore size moves it, and the digest
    larger = FirmwareImages(images.ovmf, bytes(0x3000), images.svsm)
    assert launch_digest("sev-snp", larger, vcpus) != snp


def test_a_mode_without_its_image_or_unknown_is_refused(images: FirmwareImages) -> None:
    vcpus = VcpuConfig(1, 0x00A00F11)
    without = FirmwareImages(images.ovmf, images.vars, None)
    assert launch_digest("sev", without, vcpus) == launch_digest("sev", images, vcpus)
    with pytest.raises(UsageError) as caught:
        launch_digest("sev-snp", without, vcpus)
    assert str(caught.value) == "an sev-snp launch needs the SVSM image"
    with pytest.raises(UsageError) as caught:
        launch_digest("tdx", images, vcpus)
    assert str(caught.value) == "--mode: 'tdx' is not one of plain, sev, sev-es, sev-snp"


# --- vCPU signatures (AMD 25481, CPUID Fn0000_0001_EAX) ---------------------------------------

def test_the_signature_fields_and_the_extended_family() -> None:
    assert cpu_signature(0, 0, 0) == 0
    assert cpu_signature(0xE, 0x4, 0x1) == 0x00000E41  # below 0xF: no extended family
    assert cpu_signature(0xF, 0x4, 0x1) == 0x00000F41
    assert cpu_signature(0x10, 0x4, 0x1) == 0x00100F41
    assert cpu_signature(0x17, 0x31, 0x2) == 0x00830F12  # extended model from model 7:4
    assert cpu_signature(0xFF + 0xF, 0xFF, 0xF) == 0x0FFF0FFF  # bits 15:12 reserved


@pytest.mark.parametrize(("family", "model", "stepping"), [
    (-1, 0, 0), (0x10F, 0, 0), (0, -1, 0), (0, 0x100, 0), (0, 0, -1), (0, 0, 0x10),
])
def test_a_field_out_of_range_is_refused(family: int, model: int, stepping: int) -> None:
    with pytest.raises(UsageError) as caught:
        cpu_signature(family, model, stepping)
    assert str(caught.value) == (f"family {family}, model {model}, stepping {stepping} out of "
                                 "range")


def test_every_named_model_has_qemus_family_model_and_stepping() -> None:
    epyc, rome, milan, genoa = 0x00800F12, 0x00830F10, 0x00A00F11, 0x00A10F10
    assert dict(VCPU_SIGNATURES) == {
        "EPYC": epyc, "EPYC-v1": epyc, "EPYC-v2": epyc, "EPYC-IBPB": epyc, "EPYC-v3": epyc,
        "EPYC-v4": epyc, "EPYC-Rome": rome, "EPYC-Rome-v1": rome, "EPYC-Rome-v2": rome,
        "EPYC-Rome-v3": rome, "EPYC-Milan": milan, "EPYC-Milan-v1": milan,
        "EPYC-Milan-v2": milan, "EPYC-Genoa": genoa, "EPYC-Genoa-v1": genoa,
        "EPYC-Turin": 0x00B00F00,
    }


def test_a_model_is_named_in_any_case() -> None:
    assert vcpu_signature("EPYC-Genoa") == 0x00A10F10
    assert vcpu_signature("epyc-genoa") == vcpu_signature("EPYC-GENOA") == 0x00A10F10
    assert vcpu_signature("Epyc-Rome-V2") == 0x00830F10
    with pytest.raises(UsageError) as caught:
        vcpu_signature("Pentium")
    assert str(caught.value) == ("unknown vCPU type 'Pentium'; known: " + ", ".join(
        VCPU_SIGNATURES))
    assert str(caught.value).startswith("unknown vCPU type 'Pentium'; known: EPYC, EPYC-v1, ")
