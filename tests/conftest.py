"""Shared fixtures: the vectors folder, real external tools, the owner's Secure Boot keys with
small synthetic boot images, and the SEV metadata sections of an AmdSev-style OVMF.

A missing vector folder or tool skips a test on a developer's machine and fails it in CI
(``CI=true``), where .ci/run installs everything the tests need.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import struct
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from cvm.crypto.x509_edk2 import Certificate, PrivateKey, der, generate_rsa_key, issue_certificate
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.uefi.guids import EFI_CERT_X509, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE
from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
from cvm.formats.uefi.variable import SECURE_BOOT_ATTRIBUTES, EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.host.qemu import free_port_pair as free_port_pair_now
from cvm.image.signing import sign_pe
from cvm.wire import Guid

# Property tests check behaviour, never time: no per-example deadline (a loaded CI machine must
# not turn a slow example into a failure), and CI replays a fixed sequence of examples.
settings.register_profile("cvm", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("cvm"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI", "").lower() in {"1", "true", "yes"} else "cvm")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VECTORS = PROJECT_ROOT / "tests" / "vectors"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session", autouse=True)
def _private_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests' own XDG_DATA_HOME: the emulated AMD roots the CLI makes and pins stay there,
    never in the user's home."""
    before = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if before is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = before


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is missing in CI; .ci/run must provide it")
    pytest.skip(f"{what} is not available on this machine")


@pytest.fixture(autouse=True)
def _user_data_dir(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test has its own user data directory (the vTPM keyring lives there), never ~."""
    folder = tmp_path_factory.mktemp("cvm-data")
    monkeypatch.setenv("CVM_DATA_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def vectors() -> Path:
    """``tests/vectors``: real data, each set with its provenance."""
    if not VECTORS.is_dir():
        _missing(f"the vectors folder {VECTORS}")
    return VECTORS


def find_tool(name: str) -> str:
    """The path of a real tool, or skip (fail in CI) when it is not installed."""
    path = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None
    )
    if path is None:
        _missing(f"the tool {name}")
        raise AssertionError("unreachable")
    return path


@pytest.fixture(scope="session")
def require_tool() -> object:
    """``require_tool("cryptsetup")`` gives the tool's path, or skips (fails in CI)."""
    return find_tool


DEBIAN_CACHE = (
    Path(os.environ.get("CVM_TEST_CACHE", Path.home() / ".cache" / "cvm-tests")) / "debian"
)
# The package versions of the real boot in tests/vectors/realboot/inputs.json; when one is no
# longer served, the current version of the same package is used instead.
DEBIAN_BOOT_PACKAGES = {
    "shim-signed": ("1.51~1+deb12u1+16.1-2~deb12u1", "usr/lib/shim/shimx64.efi.signed"),
    "grub-efi-amd64-signed": (
        "1+2.06+13+deb12u2", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
    ),
    "linux-image-6.1.0-56-amd64": ("6.1.192-2", "boot/vmlinuz-6.1.0-56-amd64"),
}


def _current_kernel_package() -> str:
    """The signed kernel package ``linux-image-amd64`` currently depends on."""
    import subprocess

    done = subprocess.run([find_tool("apt-cache"), "depends", "linux-image-amd64"],
                          capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        name = line.split(":", 1)[-1].strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    return "linux-image-amd64"


def _fetch_debian_package(package: str, version: str) -> Path:
    """``package``'s files from the cache, ``version`` first, else the current version (for a
    kernel, else the kernel ``linux-image-amd64`` depends on). ``cvm.image.debian_packages``
    downloads, checks each ``.deb`` against apt's package index and extracts it; a package
    that fails that check fails the test."""
    from cvm.errors import ExternalToolError
    from cvm.image.debian_packages import fetch

    find_tool("apt-get")
    find_tool("dpkg-deb")
    attempts: list[tuple[str, str | None]] = [(package, version), (package, None)]
    if package.startswith("linux-image-"):
        attempts.append((_current_kernel_package(), None))
    failure = ""
    for name, wanted in attempts:
        try:
            return fetch(DEBIAN_CACHE, name, wanted).root
        except ExternalToolError as error:  # that version or package is no longer served
            failure = str(error)
    _missing(f"the Debian package {package} ({failure})")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def debian_package() -> Callable[[str, str], Path]:
    """``debian_package(name, version)``: the package's files, downloaded and extracted once."""
    return _fetch_debian_package


@pytest.fixture(scope="session")
def debian_boot_binaries() -> dict[str, Path]:
    """Debian's signed shim, GRUB and kernel: ``{"shim": ..., "grub": ..., "kernel": ...}``.

    Downloaded with ``apt-get download`` into ``~/.cache/cvm-tests/debian`` (reused across runs)
    and extracted with ``dpkg-deb -x``; the versions of the real boot are tried first.
    """
    paths: dict[str, Path] = {}
    for role, package in zip(("shim", "grub", "kernel"), DEBIAN_BOOT_PACKAGES, strict=True):
        version, member = DEBIAN_BOOT_PACKAGES[package]
        root = _fetch_debian_package(package, version)
        path = root / member
        if not path.exists() and role == "kernel":
            path = next(iter(sorted((root / "boot").glob("vmlinuz-*"))), path)
        if not path.exists():
            _missing(f"{member} in the Debian package {package}")
        paths[role] = path
    return paths


# The owner's Secure Boot keys and small synthetic boot images (boot-chain and image tests).

OWNER = Guid.parse("0e0f0a0b-1c1d-4e4f-8a8b-9c9d0e0f1a1b")
GRUB_SBAT = b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n" \
            b"grub,5,Free Software Foundation,grub,2.06,https://www.gnu.org/software/grub/\n"


@dataclass(frozen=True)
class OwnerKeys:
    pk: Certificate
    db: Certificate
    db_key: PrivateKey

    def sign(self, image: bytes) -> bytes:
        return sign_pe(image, self.db_key, self.db)


def _esl(certificate: Certificate) -> bytes:
    return SignatureDatabase((SignatureList.of(EFI_CERT_X509, OWNER, der(certificate)),)).to_bytes()


@pytest.fixture(scope="session")
def owner_keys() -> OwnerKeys:
    pk_key, db_key = generate_rsa_key(), generate_rsa_key()
    return OwnerKeys(issue_certificate("cvm test PK", pk_key),
                     issue_certificate("cvm test db", db_key), db_key)


@pytest.fixture(scope="session")
def owner_esl() -> Callable[[Certificate], bytes]:
    """``owner_esl(certificate)``: an EFI_SIGNATURE_LIST of one X.509 certificate (owner GUID)."""
    return _esl


@pytest.fixture(scope="session")
def owner_varstore(owner_keys: OwnerKeys) -> Varstore:
    """A 4 MiB OVMF varstore with the owner's PK, KEK and db enrolled (Secure Boot on)."""
    store = Varstore.empty_4m()
    for name, vendor, cert in (("PK", EFI_GLOBAL_VARIABLE, owner_keys.pk),
                               ("KEK", EFI_GLOBAL_VARIABLE, owner_keys.pk),
                               ("db", EFI_IMAGE_SECURITY_DATABASE, owner_keys.db)):
        store = store.set(EfiVariable(name, vendor, SECURE_BOOT_ATTRIBUTES, _esl(cert)))
    return store


@pytest.fixture(scope="session")
def make_grub() -> Callable[[str, str], bytes]:
    """``make_grub(embedded_config, prefix)``: a GRUB-like core image (``mods`` + ``.sbat``)."""

    def build(config: str, prefix: str) -> bytes:
        modules = b""
        for kind, text in ((2, config), (3, prefix)):
            body = text.encode() + b"\0"
            body += bytes(-len(body) % 8)
            modules += struct.pack("<II", kind, 8 + len(body)) + body
        mods = struct.pack("<IIQQ", 0x676D696D, 0, 24, 24 + len(modules)) + modules
        return build_pe([SectionSpec(".text", b"\xc3" * 64, CODE), SectionSpec("mods", mods),
                         SectionSpec(".sbat", GRUB_SBAT)])

    return build


@pytest.fixture(scope="session")
def make_uki() -> Callable[[bytes, str, bytes], bytes]:
    """``make_uki(kernel, cmdline, initrd)``: a unified kernel image as ukify lays it out."""

    def build(kernel: bytes, cmdline: str, initrd: bytes) -> bytes:
        return build_pe([
            SectionSpec(".text", b"\xc3" * 64, CODE),
            SectionSpec(".osrel", b"ID=cvm\nVERSION_ID=1\n"),
            SectionSpec(".cmdline", cmdline.encode() + b"\0"),
            SectionSpec(".linux", kernel),
            SectionSpec(".initrd", initrd),
        ])

    return build


@pytest.fixture(scope="session")
def small_kernel() -> bytes:
    return build_pe([SectionSpec(".text", b"\x90" * 300 + b"\xc3", CODE),
                     SectionSpec(".data", b"linux")], trailer=b"payload")


# The SEV metadata sections of an AmdSev-style OVMF build (kernel hashes and an SVSM CAA page),
# for synthetic firmware from cvm.formats.ovmf.image.build_image.
AMDSEV_SECTIONS = (
    MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80A000, 0x3000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
    MetadataSection(0x80F000, 0x1000, SectionType.SVSM_CAA),
    MetadataSection(0x810000, 0x1000, SectionType.SNP_KERNEL_HASHES),
    MetadataSection(0x811000, 0xF000, SectionType.SNP_SEC_MEM),
)


@pytest.fixture(scope="session")
def amdsev_sections() -> tuple[MetadataSection, ...]:
    """The metadata sections of an AmdSev-style OVMF (SNP_KERNEL_HASHES at 0x810000)."""
    return AMDSEV_SECTIONS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """In CI every test must run: a skip becomes a failure, unless it says "not applicable"
    (a comparison that cannot exist for the inputs at hand, never a missing tool)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "not applicable" not in reason:
            report.outcome = "failed"
            report.longrepr = f"skipped in CI: {reason} (CI must run every test)"
    return None


@pytest.fixture
def umask() -> Iterator[None]:
    """A known umask (022), so the modes a writer asks for are the modes its files get."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


@contextmanager
def _files_limited_to(size: int) -> Iterator[None]:
    """Every write that would take a file past ``size`` bytes fails part-way (EFBIG, the
    process's file size limit), as on a disk that fills during the write."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the error, not the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.fixture
def full_disk() -> Callable[[int], AbstractContextManager[None]]:
    """``with full_disk(n):`` no file can grow past ``n`` bytes: a write that would fails
    after writing up to ``n`` (a real partial write, whatever code does it)."""
    return _files_limited_to


@pytest.fixture
def recovery_volume(tmp_path: Path) -> Iterator[tuple[Luks2Volume, bytes]]:
    """A LUKS2 volume in a 17 MiB file (one keyslot, passphrase ``recovery``, a cheap PBKDF2)
    and its volume key."""
    image = tmp_path / "root.img"
    with image.open("wb") as handle:
        handle.truncate(17 << 20)
    with FileStorage(image) as storage:
        volume = Luks2Volume.format(storage, b"recovery", KdfSpec("pbkdf2", iterations=1000))
        yield volume, volume.unlock(b"recovery")


@pytest.fixture(scope="session")
def free_port_pair() -> Callable[[], int]:
    """``free_port_pair()``: a port ``p`` on 127.0.0.1 with ``p`` and ``p + 1`` both free
    (a TPM server's command and platform ports)."""
    return free_port_pair_now
