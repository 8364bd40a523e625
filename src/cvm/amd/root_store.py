"""An installation's own emulated AMD: its roots and its chip seed, kept like a local CA.

Emulated evidence is only as good as the secrecy of the emulated vendor's keys, so each
installation — or each named workspace of it — makes its own the first time they are needed
and keeps them in the user's data directory, ``$XDG_DATA_HOME/cvm/emulated-amd/<workspace>``
(``~/.local/share`` when ``XDG_DATA_HOME`` is unset, as the XDG Base Directory Specification
says). Like ssh with its keys, the store refuses to use a directory or file that other users
may read or write: the directory is 0700, every file 0600.

    seed                   32 random bytes: the chips' secrets derive from it
    <Product>-ark.key.pem  the ARK's private key (PKCS #8)    <Product>-ark.der  its certificate
    <Product>-ask.key.pem  the ASK's private key              <Product>-ask.der  its certificate
    pins.json              {"<Product>": "<SHA-256 of the ARK certificate>", ...}

A product's root is generated once (:func:`cvm.amd.authority.generate_root`), then pinned by
the fingerprint of its ARK: loading it checks the certificate against the pin, each private key
against its certificate and the ASK's certificate against the ARK, and a relying party trusts
the pins (:meth:`RootStore.trust_anchors`) — never a name, never a key derived from a constant.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cvm.amd.authority import Clock, EmulatedRoot, generate_root, system_clock
from cvm.amd.pki import Vendor
from cvm.amd.product import PRODUCTS, product_named
from cvm.crypto.rsa_pss import private_key_from_pem, private_key_to_pem, public_key_der
from cvm.crypto.x509_chain import check_signed_by, parse_certificate
from cvm.errors import ChainError, IntegrityError, StateError, UsageError
from cvm.files import write_atomically

DEFAULT_WORKSPACE = "default"
SEED_SIZE = 32
PINS = "pins.json"
DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
_WORKSPACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def data_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME``, or ``~/.local/share`` when it is unset or not absolute."""
    env = os.environ if environ is None else environ
    configured = env.get("XDG_DATA_HOME", "")
    if configured and Path(configured).is_absolute():
        return Path(configured)
    return Path(env.get("HOME") or Path.home()) / ".local" / "share"


def workspace_directory(workspace: str, environ: Mapping[str, str] | None = None) -> Path:
    """Where the store of ``workspace`` lives."""
    if not _WORKSPACE_NAME.fullmatch(workspace):
        raise UsageError(
            f"workspace name {workspace!r}: letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 64 characters"
        )
    return data_home(environ) / "cvm" / "emulated-amd" / workspace


def _private(path: Path, expected: int) -> None:
    """Refuse a store entry that others may read or write (or that is not ours to trust)."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise IntegrityError(f"{path}: a symbolic link in the emulated AMD root store")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise IntegrityError(
            f"{path}: mode {mode:04o} lets other users at the emulated AMD keys "
            f"(expected {expected:04o}; chmod it, or make a new workspace)"
        )


class RootStore:
    """The emulated AMD roots of one workspace, in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @classmethod
    def for_workspace(
        cls, workspace: str = DEFAULT_WORKSPACE, environ: Mapping[str, str] | None = None
    ) -> RootStore:
        return cls(workspace_directory(workspace, environ))

    def exists(self) -> bool:
        return (self.directory / PINS).is_file()

    def _file(self, name: str) -> Path:
        path = self.directory / name
        _private(path, FILE_MODE)
        return path

    def _open(self) -> None:
        if not self.exists():
            raise StateError(
                f"no emulated AMD root in {self.directory} yet; "
                "'cvm report emulated-root' makes one"
            )
        _private(self.directory, DIRECTORY_MODE)

    @contextmanager
    def _creating(self) -> Iterator[None]:
        """Hold the store's lock (:meth:`_lock_and_create`) while the block runs, so that two
        processes making the same root agree on one."""
        descriptor = self._lock_and_create()
        try:
            yield
        finally:
            os.close(descriptor)

    def _lock_and_create(self) -> int:
        """Make the directory (0700), seed and pins if missing, under the store's exclusive
        lock; return the lock's descriptor, still held."""
        self.directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        _private(self.directory, DIRECTORY_MODE)
        descriptor = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            self._create()
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor

    def _create(self) -> None:
        if not (self.directory / "seed").exists():
            write_atomically(self.directory / "seed", os.urandom(SEED_SIZE))
        if not (self.directory / PINS).exists():
            write_atomically(self.directory / PINS, b"{}\n")

    def pins(self) -> dict[str, str]:
        """Product -> pinned ARK fingerprint, for every product this store has a root of."""
        self._open()
        try:
            pins = json.loads(self._file(PINS).read_bytes())
        except ValueError:
            raise IntegrityError(f"{self.directory / PINS}: not JSON") from None
        if not isinstance(pins, dict) or not all(
            name in PRODUCTS and isinstance(value, str) for name, value in pins.items()
        ):
            raise IntegrityError(f"{self.directory / PINS}: not a map of product to fingerprint")
        return pins

    def trust_anchors(self) -> list[tuple[str, str]]:
        """(product, ARK SHA-256) of every pinned root: what ``--trust emulated`` trusts."""
        return sorted(self.pins().items())

    def ark_certificates(self) -> list[bytes]:
        """The ARK certificate (DER) of every pinned product, each checked against its pin:
        what a relying party checks the emulated CRLs' signatures with (no key is read)."""
        certificates = []
        for product, pin in self.trust_anchors():
            der = self._file(f"{product}-ark.der").read_bytes()
            if hashlib.sha256(der).hexdigest() != pin:
                raise IntegrityError(f"{self.directory}: the {product} ARK is not the pinned one")
            certificates.append(der)
        return certificates

    def seed(self) -> bytes:
        self._open()
        seed = self._file("seed").read_bytes()
        if len(seed) != SEED_SIZE:
            raise IntegrityError(f"{self.directory / 'seed'}: not {SEED_SIZE} bytes")
        return seed

    def root(self, product: str, create: bool = False) -> EmulatedRoot:
        """The pinned root of ``product``; with ``create``, generate and pin it if absent."""
        chosen = product_named(product)
        if create:
            with self._creating():
                pins = self.pins()
                if chosen.name not in pins:
                    return self._generate(chosen.name, pins)
        pins = self.pins()
        if chosen.name not in pins:
            raise StateError(
                f"no emulated {chosen.name} root in {self.directory} yet; "
                f"'cvm report emulated-root --product {chosen.name}' makes one"
            )
        return self._load(chosen.name, pins[chosen.name])

    def vendor(self, product: str, clock: Clock = system_clock, create: bool = False) -> Vendor:
        """The emulated AMD of this store: its root of ``product`` and its chips."""
        root = self.root(product, create)
        return Vendor(root.product, self.seed(), clock, root=root)

    def _generate(self, product: str, pins: dict[str, str]) -> EmulatedRoot:
        root = generate_root(product)
        for role, key, certificate in (
            ("ark", root.ark_key, root.ark_certificate),
            ("ask", root.ask_key, root.ask_certificate),
        ):
            write_atomically(self.directory / f"{product}-{role}.key.pem", private_key_to_pem(key))
            write_atomically(self.directory / f"{product}-{role}.der", certificate)
        pins = {**pins, product: root.fingerprint()}
        write_atomically(self.directory / PINS,
                         json.dumps(pins, indent=2, sort_keys=True).encode() + b"\n")
        return root

    def _load(self, product: str, pin: str) -> EmulatedRoot:
        keys, certificates = [], []
        for role in ("ark", "ask"):
            keys.append(private_key_from_pem(self._file(f"{product}-{role}.key.pem").read_bytes()))
            certificates.append(self._file(f"{product}-{role}.der").read_bytes())
        root = EmulatedRoot(product_named(product), keys[0], certificates[0], keys[1],
                            certificates[1])
        if root.fingerprint() != pin:
            raise IntegrityError(
                f"{self.directory}: the {product} ARK is not the pinned one "
                f"(pinned {pin}, found {root.fingerprint()})"
            )
        ark, ask = (parse_certificate(der) for der in certificates)
        for role, key, cert in (("ARK", keys[0], ark), ("ASK", keys[1], ask)):
            if public_key_der(key.public_key()) != cert.spki:
                raise IntegrityError(
                    f"{self.directory}: the {product} {role} key is not the certified one"
                )
        try:
            check_signed_by(ark, ark)
            check_signed_by(ask, ark)
        except ChainError as error:
            raise IntegrityError(f"{self.directory}: {error}") from None
        return root
