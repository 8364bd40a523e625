"""``cvm luks``: LUKS2 volumes compatible with cryptsetup 2.6 (names fixed for scripts).

``format IMAGE --key-file F [--pbkdf pbkdf2|argon2id|argon2i] [--iter-time MS |
--pbkdf-force-iterations N] [--sector-size 512|4096] [--volume-key-file F] [--label L]`` ·
``dump IMAGE [--json]`` · ``test-key IMAGE --key-file F`` (exit 0, or 2 for a wrong key) ·
``dump-volume-key IMAGE --key-file F -o OUT`` · ``add-key IMAGE --key-file F --new-key-file G``
· ``remove-key IMAGE --key-file F`` · ``token import|export|remove IMAGE ...`` ·
``encrypt PLAIN OUT --key-file F`` · ``decrypt IMAGE OUT --key-file F`` (or
``--volume-key-file K``) · ``change-key IMAGE --key-file F --new-key-file G``.

Every command that opens a keyslot takes ``--max-kdf-cost N`` (default 2^26 work units, see
:mod:`cvm.disk.kdf_ceiling`), prints on stderr what each keyslot's KDF asks for before spending
it, and refuses (exit 67) a keyslot above the ceiling. Key derivation in ``format`` and
``encrypt`` prints a status line too. A missing, unreadable or directory path exits 74, a
malformed header 65.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

from cvm.cli.options import reading
from cvm.disk.conversion import decrypt_image, encrypt_image
from cvm.disk.dump import dump_json, dump_text
from cvm.disk.kdf_ceiling import DEFAULT_MAX_KDF_COST, KdfCeiling
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import FormatError, UsageError
from cvm.files import write_output

app = typer.Typer(help="LUKS2 volumes that cryptsetup opens (and that open cryptsetup's).",
                  no_args_is_help=True)
token_app = typer.Typer(help="Import, export and remove LUKS2 tokens (JSON objects).",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")

KEY_FILE = typer.Option(..., "--key-file", help="File whose bytes are the passphrase.")
OPTIONAL_KEY_FILE = typer.Option(None, "--key-file", help="File whose bytes are the passphrase.")
PBKDF = typer.Option("argon2id", "--pbkdf", help="pbkdf2, argon2id or argon2i.")
DEFAULT_ITER_TIME_MS = 2000  # cryptsetup's
ITER_TIME = typer.Option(None, "--iter-time",
                         help="Target unlock time in ms (calibrated; default 2000).")
FORCE_ITER = typer.Option(None, "--pbkdf-force-iterations",
                          help="Fixed PBKDF2 iterations / Argon2 passes (no calibration).")
MEMORY = typer.Option(262144, "--pbkdf-memory", help="Argon2 memory in KiB.")
PARALLEL = typer.Option(4, "--pbkdf-parallel", help="Argon2 threads (lanes).")
SECTOR = typer.Option(4096, "--sector-size", help="Data sector size: 512 or 4096.")
VOLUME_KEY_FILE = typer.Option(None, "--volume-key-file",
                               help="Use this raw volume key (32 or 64 bytes).")
LABEL = typer.Option("", "--label", help="Volume label.")
KEY_OUT = typer.Option(..., "-o", "--output", help="Raw key file to write.")
NEW_KEY_FILE = typer.Option(..., "--new-key-file", help="The new passphrase file.")
JSON_FILE = typer.Option(..., "--json-file", help="Token JSON object.")
TOKEN_OUT = typer.Option(None, "-o", "--output", help="Write the token here.")
MAX_KDF_COST = typer.Option(
    DEFAULT_MAX_KDF_COST, "--max-kdf-cost",
    help="Most KDF work spent per keyslot try: PBKDF2 iterations, or Argon2 passes x KiB, "
         "plus the digest's iterations; a keyslot asking more is not tried (exit 67).")


VOLUME_KEY_SIZES = (32, 64)  # AES-256-XTS or AES-512-XTS, as cryptsetup takes them


def read_volume_key(path: Path) -> bytes:
    """``--volume-key-file``: a raw key of 32 or 64 bytes, else refused naming the file."""
    key = path.read_bytes()
    if len(key) not in VOLUME_KEY_SIZES:
        raise FormatError(f"--volume-key-file {path}: {len(key)} bytes, a volume key has "
                          "32 or 64")
    return key


def read_key_file(path: Path) -> bytes:
    data = path.read_bytes()
    if not data:
        raise UsageError(f"key file {path} is empty")
    return data


def kdf_spec(pbkdf: str, iter_time: int | None, iterations: int | None, memory: int,
             parallel: int) -> KdfSpec:
    if pbkdf not in ("pbkdf2", "argon2id", "argon2i"):
        raise UsageError(f"--pbkdf must be pbkdf2, argon2id or argon2i, not {pbkdf!r}")
    if iterations is not None and iter_time is not None:  # cryptsetup refuses it too
        raise UsageError("--pbkdf-force-iterations cannot be combined with --iter-time")
    return KdfSpec(pbkdf, iterations=iterations,  # type: ignore[arg-type]
                   iter_time_ms=DEFAULT_ITER_TIME_MS if iter_time is None else iter_time,
                   memory_kib=memory, parallel=parallel)


def sector_size_option(value: int) -> int:
    if value not in (512, 4096):
        raise UsageError(f"--sector-size must be 512 or 4096, not {value}")
    return value


def announce(text: str) -> None:
    """A status line on stderr: what a key derivation is about to spend."""
    typer.echo(f"cvm: {text}", err=True)


def volume_storage(image: Path, write: bool) -> FileStorage:
    """``image`` opened read-only unless the command writes."""
    return FileStorage(image, read_only=not write)


def opened_volume(storage: FileStorage, image: Path, write: bool, max_kdf_cost: int
                  ) -> Luks2Volume:
    """The volume on ``storage``: header recovery reported on stderr (and repaired only when
    writing); at most ``max_kdf_cost`` spent on a keyslot try, what each asks for said first."""
    with reading(image):
        volume = Luks2Volume.open(storage, repair=write, ceiling=KdfCeiling(max_kdf_cost),
                                  announce=announce)
    for warning in volume.warnings:
        typer.echo(f"cvm: warning: {image}: {warning}", err=True)
    return volume


@contextmanager
def open_volume(image: Path, write: bool = False, max_kdf_cost: int = DEFAULT_MAX_KDF_COST
                ) -> Iterator[Luks2Volume]:
    """Open ``image`` (:func:`opened_volume`), closing it after the block."""
    with volume_storage(image, write) as storage:
        yield opened_volume(storage, image, write, max_kdf_cost)


def target_exists(image: Path) -> None:
    """``format`` writes a header on an existing file; it never creates one."""
    if not image.exists():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory (create it first, "
                                "e.g. truncate -s 64M)", str(image))


def volume_fits(image: Path, size: int, sector_size: int) -> int:
    """The sector size (512 or 4096) when ``size`` bytes hold the 16 MiB header area and at
    least one data sector."""
    if size < (16 << 20) + sector_size_option(sector_size):
        raise UsageError(f"{image} is too small: a LUKS2 volume needs more than 16 MiB")
    return sector_size


def write_volume_key(out: Path, key: bytes) -> None:
    """The volume key to ``out``: a new file, 0600 whatever a file already there allowed."""
    write_output(out, key, secret=True)


def refuse_last_keyslot(keyslots: int, force: bool) -> None:
    """Removing the last keyslot leaves the volume openable only with its volume key."""
    if keyslots == 1 and not force:
        raise UsageError("this is the last keyslot; add --force to make the volume "
                         "unopenable without the volume key")


def read_token(json_file: Path) -> dict[str, Any]:
    """``token import``'s token: a JSON object."""
    try:
        token: Any = json.loads(json_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FormatError(f"{json_file} is not JSON ({error})") from None
    if not isinstance(token, dict):
        raise FormatError(f"{json_file} does not hold a JSON object")
    return token


def token_in_use(tokens: dict[int, Any], token_id: int) -> Any:
    """Token ``token_id`` of ``tokens``, refused when the slot is empty."""
    if token_id not in tokens:
        raise UsageError(f"token {token_id} is not in use")
    return tokens[token_id]


def one_key_source(key_file: Path | None, volume_key_file: Path | None) -> None:
    """``decrypt`` opens with a passphrase or the volume key: exactly one of them."""
    if (key_file is None) == (volume_key_file is None):
        raise UsageError("give exactly one of --key-file and --volume-key-file")


def volume_key(volume: Luks2Volume, key_file: Path | None, volume_key_file: Path | None
               ) -> bytes:
    """The volume key: ``volume_key_file``'s bytes (refused naming the file unless they are
    the volume's key), else what ``key_file`` unlocks."""
    if volume_key_file is not None:
        key = read_volume_key(volume_key_file)
        with reading(volume_key_file, "--volume-key-file"):
            volume.check_volume_key(key)
        return key
    assert key_file is not None
    return volume.unlock(read_key_file(key_file))


def plain_input(plain: Path) -> int:
    """``encrypt``'s input size, refused when it is a folder."""
    if plain.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(plain))
    return plain.stat().st_size


def progress_bar(description: str, total: int) -> Progress:
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.percentage:>3.0f}%"), TransferSpeedColumn(),
                   console=Console(stderr=True), transient=False)
    bar.add_task(description, total=total)
    return bar


@app.command("format")
def format_volume(
    image: Path, key_file: Path = KEY_FILE, pbkdf: str = PBKDF, iter_time: int | None = ITER_TIME,
    pbkdf_force_iterations: int | None = FORCE_ITER, pbkdf_memory: int = MEMORY,
    pbkdf_parallel: int = PARALLEL, sector_size: int = SECTOR,
    volume_key_file: Path | None = VOLUME_KEY_FILE, label: str = LABEL,
) -> None:
    """Write a new LUKS2 header on IMAGE (an existing file of at least 17 MiB)."""
    kdf = kdf_spec(pbkdf, iter_time, pbkdf_force_iterations, pbkdf_memory, pbkdf_parallel)
    key = read_volume_key(volume_key_file) if volume_key_file else None
    target_exists(image)
    with FileStorage(image) as storage:
        sector = volume_fits(image, storage.size(), sector_size)
        volume = Luks2Volume.format(storage, read_key_file(key_file), kdf, volume_key=key,
                                    sector_size=sector, label=label, announce=announce)
    typer.echo(f"formatted {image}: LUKS2 UUID {volume.uuid}, keyslot 0")


@app.command("dump")
def dump(image: Path, as_json: bool = typer.Option(False, "--json", help="JSON metadata.")
         ) -> None:
    """Print the header like cryptsetup luksDump (or its JSON metadata)."""
    with open_volume(image) as volume:
        if as_json:  # byte for byte what cryptsetup prints, which ends without a newline
            typer.echo(dump_json(volume), nl=False)
        else:
            typer.echo(dump_text(volume))


@app.command("test-key")
def test_key(image: Path, key_file: Path = KEY_FILE, max_kdf_cost: int = MAX_KDF_COST) -> None:
    """Exit 0 if the key file opens a keyslot, 2 if it does not (as cryptsetup)."""
    with open_volume(image, max_kdf_cost=max_kdf_cost) as volume:
        slot, _ = volume.unlock_slot(read_key_file(key_file))
    typer.echo(f"key opens keyslot {slot}")


@app.command("dump-volume-key")
def dump_volume_key(image: Path, key_file: Path = KEY_FILE, out: Path = KEY_OUT,
                    max_kdf_cost: int = MAX_KDF_COST) -> None:
    """Write the volume key (raw bytes, mode 0600) to OUT."""
    with open_volume(image, max_kdf_cost=max_kdf_cost) as volume:
        key = volume.unlock(read_key_file(key_file))
    write_volume_key(out, key)
    typer.echo(f"wrote the {len(key) * 8}-bit volume key to {out}")


@app.command("add-key")
def add_key(
    image: Path, key_file: Path = KEY_FILE,
    new_key_file: Path = NEW_KEY_FILE,
    pbkdf: str = PBKDF, iter_time: int | None = ITER_TIME,
    pbkdf_force_iterations: int | None = FORCE_ITER, pbkdf_memory: int = MEMORY,
    pbkdf_parallel: int = PARALLEL, max_kdf_cost: int = MAX_KDF_COST,
) -> None:
    """Add a keyslot for the new key file, authorised by an existing key file."""
    kdf = kdf_spec(pbkdf, iter_time, pbkdf_force_iterations, pbkdf_memory, pbkdf_parallel)
    with open_volume(image, write=True, max_kdf_cost=max_kdf_cost) as volume:
        key = volume.unlock(read_key_file(key_file))
        slot = volume.add_keyslot(key, read_key_file(new_key_file), kdf)
    typer.echo(f"added keyslot {slot}")


@app.command("remove-key")
def remove_key(image: Path, key_file: Path = KEY_FILE,
               force: bool = typer.Option(False, "--force", help="Allow removing the last key."),
               max_kdf_cost: int = MAX_KDF_COST) -> None:
    """Remove the keyslot the key file opens."""
    with open_volume(image, write=True, max_kdf_cost=max_kdf_cost) as volume:
        refuse_last_keyslot(len(volume.metadata.keyslots), force)
        slot = volume.remove_key(read_key_file(key_file))
    typer.echo(f"removed keyslot {slot}")


@token_app.command("import")
def token_import(image: Path,
                 json_file: Path = JSON_FILE,
                 token_id: int | None = typer.Option(None, "--token-id", help="Token slot.")
                 ) -> None:
    """Store a token (a JSON object with "type" and "keyslots")."""
    token = read_token(json_file)
    with open_volume(image, write=True) as volume:
        number = volume.add_token(token, token_id)
    typer.echo(f"imported token {number}")


@token_app.command("export")
def token_export(image: Path, token_id: int = typer.Option(..., "--token-id"),
                 out: Path | None = TOKEN_OUT) -> None:
    """Print (or write) one token's JSON."""
    with open_volume(image) as volume:
        tokens = volume.tokens
    text = json.dumps(token_in_use(tokens, token_id), indent=2)
    if out is None:
        typer.echo(text)
    else:
        write_output(out, (text + "\n").encode())


@token_app.command("remove")
def token_remove(image: Path, token_id: int = typer.Option(..., "--token-id")) -> None:
    """Remove one token."""
    with open_volume(image, write=True) as volume:
        volume.remove_token(token_id)
    typer.echo(f"removed token {token_id}")


@app.command("encrypt")
def encrypt(
    plain: Path, out: Path, key_file: Path = KEY_FILE, pbkdf: str = PBKDF,
    iter_time: int | None = ITER_TIME, pbkdf_force_iterations: int | None = FORCE_ITER,
    pbkdf_memory: int = MEMORY, pbkdf_parallel: int = PARALLEL, sector_size: int = SECTOR,
    volume_key_file: Path | None = VOLUME_KEY_FILE, label: str = LABEL,
) -> None:
    """Write OUT: a new LUKS2 image whose data segment is PLAIN, encrypted."""
    kdf = kdf_spec(pbkdf, iter_time, pbkdf_force_iterations, pbkdf_memory, pbkdf_parallel)
    size = plain_input(plain)
    key = read_volume_key(volume_key_file) if volume_key_file else None
    with progress_bar("encrypting", size) as bar:
        task = bar.task_ids[0]
        volume = encrypt_image(plain, out, read_key_file(key_file), kdf,
                               sector_size_option(sector_size), key, label,
                               progress=lambda n: bar.advance(task, n), announce=announce)
    typer.echo(f"wrote {out}: LUKS2 UUID {volume.uuid}")


@app.command("decrypt")
def decrypt(image: Path, out: Path, key_file: Path | None = OPTIONAL_KEY_FILE,
            volume_key_file: Path | None = VOLUME_KEY_FILE,
            max_kdf_cost: int = MAX_KDF_COST) -> None:
    """Write the decrypted data segment of IMAGE to OUT (key file or volume key)."""
    one_key_source(key_file, volume_key_file)
    with open_volume(image, max_kdf_cost=max_kdf_cost) as volume:
        key = volume_key(volume, key_file, volume_key_file)
        with reading(image):  # a data area cut short is the image's fault
            total = volume.data_device(key).size()
    with progress_bar("decrypting", total) as bar:
        task = bar.task_ids[0]
        size = decrypt_image(image, out, key, progress=lambda n: bar.advance(task, n))
    typer.echo(f"wrote {size} bytes to {out}")


@app.command("change-key")
def change_key(
    image: Path, key_file: Path = KEY_FILE, new_key_file: Path = NEW_KEY_FILE,
    pbkdf: str = PBKDF, iter_time: int | None = ITER_TIME,
    pbkdf_force_iterations: int | None = FORCE_ITER, pbkdf_memory: int = MEMORY,
    pbkdf_parallel: int = PARALLEL, max_kdf_cost: int = MAX_KDF_COST,
) -> None:
    """Replace the key file's keyslot by one for the new key file (added first)."""
    kdf = kdf_spec(pbkdf, iter_time, pbkdf_force_iterations, pbkdf_memory, pbkdf_parallel)
    with open_volume(image, write=True, max_kdf_cost=max_kdf_cost) as volume:
        slot = volume.change_key(read_key_file(key_file), read_key_file(new_key_file), kdf)
    typer.echo(f"changed the key: now in keyslot {slot}")
