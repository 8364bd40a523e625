"""``cvm image``: the owner builds a confidential VM image, and inspects one.

``build OUT [--target emulated|qemu] [--chain uki|shim-grub]
[--mode plain|sev|sev-es|sev-snp|all|LIST] [--seal pcrs|signed|both]
[--sb-key K --sb-cert C | --keys OWNER_DIR] [--kernel F] [--dbx HEX]...
[--vcpus N] [--vcpu-type NAME] [--seed N] [--kdf-cost default|fast] [--force] [--json]``
writes the bundle OUT (docs/image-bundle.md): disk, firmware, sealed vTPM state, reference
values, and the owner's secrets in OUT/owner. ``--target qemu [--chain shim-grub|uki]
[--srk-public SRK.pub] [--profile q35...] [--cache DIR]`` writes an image the real QEMU + OVMF +
TPM boots instead (:mod:`cvm.image.qemu_target`).
``show OUT [--json]`` reads the manifest and the reference values back, strictly.

``--seed N`` makes the build reproducible, for either target (the same seed and inputs give the
same bytes in every file: keys, disk, firmware, state; for ``--target qemu`` the same Debian
packages and ``--srk-public`` too) and ``SOURCE_DATE_EPOCH``, when set, is the time stamped into
the ESP and the certificates (:mod:`cvm.image.build_epoch`). A seeded image's private keys and
disk secrets follow from the seed: the build warns on stderr, and the manifest says
``"seeded": true`` (``qemu-image.json`` for the qemu target).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from cvm.cli.options import parse_file, reading, refuse_unused
from cvm.crypto.x509_edk2 import load_certificate, load_private_key
from cvm.errors import UsageError
from cvm.formats.pe.image import PeImage
from cvm.image.build_epoch import VARIABLE, parse_source_date_epoch
from cvm.image.bundle import ImageSpec, build_image, load_manifest, parse_modes
from cvm.image.keys import KeyPair, OwnerKeys
from cvm.image.reference_values import loads as load_reference_values

app = typer.Typer(help="The owner's image: build a confidential VM bundle, show one.",
                  no_args_is_help=True)
AS_JSON = typer.Option(False, "--json", help="JSON output.")
SEEDED_WARNING = ("warning: a seeded image (--seed): its owner keys, recovery passphrase and "
                  "disk key follow from the seed — for tests and demos, never for real data")
QEMU_SEEDED_WARNING = ("warning: a seeded image (--seed): its root key and owner keys follow "
                       "from the seed — for tests and demos, never for real data")


def _db_pair(key: Path | None, cert: Path | None) -> KeyPair | None:
    if key is None and cert is None:
        return None
    if key is None or cert is None:
        raise UsageError("give --sb-key and --sb-cert together (the db signing key)")
    return KeyPair(parse_file(key, "--sb-key", load_private_key),
                   parse_file(cert, "--sb-cert", load_certificate))


def target_options_unused(target: str, *, mode: str, seal: str | None, sb_key: Path | None,
                          sb_cert: Path | None, keys_dir: Path | None, kernel: Path | None,
                          dbx: list[str], vcpus: int, vcpu_type: str, seed: int | None,
                          kdf_cost: str, srk_public: Path | None, profile: str | None,
                          cache: Path | None) -> None:
    """Refuse a ``--target`` other than emulated or qemu, and every option the target does not
    read: a user who gave one believed it would act."""
    if target == "qemu":
        refuse_unused("--target qemu", {
            "--mode": mode != "sev-snp", "--seal": seal is not None, "--sb-key": sb_key is not None,
            "--sb-cert": sb_cert is not None, "--keys": keys_dir is not None,
            "--kernel": kernel is not None, "--dbx": bool(dbx), "--vcpus": vcpus != 1,
            "--vcpu-type": vcpu_type != "EPYC-Milan", "--kdf-cost": kdf_cost != "default"})
        return
    if target != "emulated":
        raise UsageError(f"--target {target!r}: emulated or qemu")
    refuse_unused("--target emulated", {"--srk-public": srk_public is not None,
                                        "--profile": profile is not None,
                                        "--cache": cache is not None})


def refuse_existing(out: Path, manifest: str, force: bool, what: str) -> None:
    """Keep the bundle already in ``out`` (its ``manifest`` there) unless ``--force``."""
    if (out / manifest).exists() and not force:
        raise UsageError(f"{out} already holds {what}; give --force to overwrite it")


def dbx_digests(texts: list[str]) -> tuple[bytes, ...]:
    """The ``--dbx`` digests: each an Authenticode SHA-256, 64 hex digits."""
    revoked = []
    for text in texts:
        try:
            digest = bytes.fromhex(text)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise UsageError(f"--dbx: {text!r} is not a SHA-256 digest (64 hex digits)")
        revoked.append(digest)
    return tuple(revoked)


def read_kernel(kernel: Path | None) -> bytes | None:
    """The ``--kernel`` image's bytes, refused unless a PE image (None: the built-in one)."""
    if kernel is None:
        return None
    return parse_file(kernel, "--kernel", lambda data: (PeImage.parse(data), data)[1])


def emulated_plan(out: Path, *, force: bool, chain: str, mode: str, seal: str | None,
                  sb_key: Path | None, sb_cert: Path | None, keys_dir: Path | None,
                  kernel: Path | None, dbx: list[str], vcpus: int, vcpu_type: str,
                  seed: int | None, kdf_cost: str
                  ) -> tuple[ImageSpec, OwnerKeys | None, KeyPair | None]:
    """What ``build --target emulated`` builds, checked before anything is written: the spec,
    the owner keys reused (``--keys``) and the db signing key (``--sb-key``/``--sb-cert``)."""
    refuse_existing(out, "image.json", force, "an image bundle")
    db = _db_pair(sb_key, sb_cert)
    if db is not None and keys_dir is not None:
        raise UsageError("give --keys or --sb-key/--sb-cert, not both")
    revoked = dbx_digests(dbx)
    kernel_image = read_kernel(kernel)
    spec = ImageSpec(chain=chain, modes=parse_modes(mode), seal=seal, vcpus=vcpus,
                     vcpu_type=vcpu_type, seed=seed,
                     source_date_epoch=parse_source_date_epoch(os.environ.get(VARIABLE)),
                     kdf_cost=kdf_cost, extra_dbx=revoked, kernel=kernel_image)
    spec.check()
    keys = None
    if keys_dir is not None:
        with reading(keys_dir, "--keys"):
            keys = OwnerKeys.load(keys_dir)
    return spec, keys, db


def build_warnings(spec: ImageSpec) -> list[str]:
    """What the build says on stderr: a seeded image's secrets follow from its seed."""
    return [SEEDED_WARNING] if spec.seed is not None else []


@app.command("build")
def build(
    out: Path,
    chain: str = typer.Option("uki", "--chain", help="Boot chain: uki or shim-grub."),
    mode: list[str] = typer.Option(["sev-snp"], "--mode",
                                   help="plain, sev, sev-es, sev-snp, a comma list, or all; "
                                        "repeat to add more."),
    seal: str = typer.Option(None, "--seal",
                             help="pcrs, signed or both (default: signed for uki, pcrs for "
                                  "shim-grub)."),
    sb_key: Path = typer.Option(None, "--sb-key", help="db signing key (PEM); default: new."),
    sb_cert: Path = typer.Option(None, "--sb-cert", help="db certificate (PEM)."),
    keys_dir: Path = typer.Option(None, "--keys",
                                  help="Reuse every owner key of an earlier bundle's owner/."),
    kernel: Path = typer.Option(None, "--kernel", help="The kernel (a PE/EFI-stub image)."),
    dbx: list[str] = typer.Option([], "--dbx",
                                  help="Authenticode SHA-256 (hex) to revoke in dbx; repeat."),
    vcpus: int = typer.Option(1, "--vcpus", help="vCPUs the launch digest is predicted for."),
    vcpu_type: str = typer.Option("EPYC-Milan", "--vcpu-type", help="QEMU CPU model."),
    seed: int = typer.Option(None, "--seed",
                             help="Reproducible build (either target): every random choice, "
                                  "the owner's keys included, from the seed, and fixed time "
                                  "stamps (SOURCE_DATE_EPOCH, else 2025-01-01): the same seed and "
                                  "inputs give the same bytes. The keys and disk secrets follow "
                                  "from the seed: for tests and demos, never for real data."),
    kdf_cost: str = typer.Option("default", "--kdf-cost",
                                 help="Recovery keyslot KDF: default (cryptsetup's argon2id) "
                                      "or fast (PBKDF2, 1000 iterations; demos, tests)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing bundle in OUT."),
    target: str = typer.Option("emulated", "--target",
                               help="emulated (cvm's machine) or qemu (real QEMU + OVMF + TPM)."),
    srk_public: Path = typer.Option(None, "--srk-public",
                                    help="qemu: the target TPM's SRK (TPM2B_PUBLIC) to seal to."),
    profile: str = typer.Option(None, "--profile",
                                help="qemu: the VM profile (device set; default q35)."),
    cache: Path = typer.Option(None, "--cache",
                               help="qemu: the Debian package cache (default under "
                                    "XDG_CACHE_HOME)."),
    as_json: bool = AS_JSON,
) -> None:
    """Build the image bundle OUT: disk, firmware, sealed vTPM state, reference values."""
    modes = ",".join(mode)  # every --mode given counts, each one a mode or a comma list
    target_options_unused(target, mode=modes, seal=seal, sb_key=sb_key, sb_cert=sb_cert,
                          keys_dir=keys_dir, kernel=kernel, dbx=dbx, vcpus=vcpus,
                          vcpu_type=vcpu_type, seed=seed, kdf_cost=kdf_cost,
                          srk_public=srk_public, profile=profile, cache=cache)
    if target == "qemu":
        _build_qemu(out, chain, srk_public, profile, cache, force, as_json, seed)
        return
    spec, keys, db = emulated_plan(out, force=force, chain=chain, mode=modes, seal=seal,
                                   sb_key=sb_key, sb_cert=sb_cert, keys_dir=keys_dir,
                                   kernel=kernel, dbx=dbx, vcpus=vcpus, vcpu_type=vcpu_type,
                                   seed=seed, kdf_cost=kdf_cost)
    built = build_image(out, spec, keys, db=db)
    for warning in build_warnings(spec):
        typer.echo(warning, err=True)
    total = sum(built.timings.values())
    if as_json:
        typer.echo(json.dumps({"out": str(out), "manifest": built.manifest,
                               "launch": {e.mode: e.digest.hex() for e in built.reference.launch},
                               "timings_s": built.timings, "total_s": total}, indent=1))
        return
    manifest = built.manifest
    typer.echo(f"built {out} ({manifest['chain']}, sealed: {manifest['seal']}) in "
               f"{total:.2f} s")
    for stage in manifest["stages"]:
        digest = stage["authenticode_sha256"] or stage["sha256"]
        kind = "authenticode" if stage["authenticode_sha256"] else "sha256"
        where = stage["path"] or "(inside the UKI)"
        typer.echo(f"  {stage['name']:<10} {where:<24} {kind} {digest[:16]}…  "
                   f"signed by {stage['signer'] or '-'}")
    for entry in built.reference.launch:
        typer.echo(f"  launch {entry.mode:<8} {entry.vcpus} vCPU  {entry.digest.hex()}")
    for token in manifest["tokens"]:
        signed = f" + signed PCR {token['pubkey_pcrs']}" if token["pubkey_pcrs"] else ""
        typer.echo(f"  token {token['id']} ({token['policy']}): PCR {token['pcrs']}{signed}, "
                   f"keyslot {token['keyslot']}")
    kdf = manifest["kdf"]["recovery_keyslot"]
    typer.echo(f"  recovery keyslot KDF: {kdf.get('type')} ({manifest['kdf']['cost']})")
    typer.echo(f"  owner secrets in {out / 'owner'} — keep them; never give them to the host")


def qemu_spec(out: Path, chain: str, srk_public: Path | None, profile: str | None,
              force: bool, seed: int | None = None) -> Any:
    """What ``build --target qemu`` builds, checked before anything is fetched: the chain, the
    profile (q35 unless ``--profile``), the SRK the root's key is sealed to (none unless
    ``--srk-public``) and the seed (with ``SOURCE_DATE_EPOCH``) that makes it reproducible."""
    from cvm.formats.tpm2.public import Public
    from cvm.formats.tpm2.tpm2b import parse_tpm2b
    from cvm.image.qemu_target import MANIFEST, QemuTargetSpec
    from cvm.image.vm_profile import profile_named

    refuse_existing(out, MANIFEST, force, "a qemu image")
    srk = None
    if srk_public is not None:
        srk = parse_file(srk_public, "--srk-public",
                         lambda data: Public.from_bytes(parse_tpm2b(data, "TPM2B_PUBLIC")))
    spec = QemuTargetSpec(chain, profile_named(profile or "q35"), srk, seed=seed,
                          source_date_epoch=parse_source_date_epoch(os.environ.get(VARIABLE)))
    spec.check()
    return spec


def _build_qemu(out: Path, chain: str, srk_public: Path | None, profile: str | None,
                cache: Path | None, force: bool, as_json: bool, seed: int | None = None) -> None:
    from cvm.image.debian_packages import BootInputs, default_cache
    from cvm.image.qemu_target import build_qemu_image

    spec = qemu_spec(out, chain, srk_public, profile, force, seed)
    inputs = BootInputs.fetch(cache or default_cache(), with_stub=chain == "uki")
    manifest = build_qemu_image(out, spec, inputs)
    if seed is not None:
        typer.echo(QEMU_SEEDED_WARNING, err=True)
    if as_json:
        typer.echo(json.dumps({"out": str(out), "manifest": manifest}, indent=1))
        return
    sealed = manifest["sealed"]
    typer.echo(f"built {out} (qemu, {chain}, profile {manifest['profile']})")
    typer.echo(f"  ESP: {', '.join(manifest['esp'])}")
    typer.echo("  root: LUKS2, " + (f"key sealed to the SRK under sha256 PCR {sealed['pcrs']} "
                                    "(token 0)" if sealed else "no TPM seal (no --srk-public)"))
    typer.echo(f"  predicted PCRs in {out / manifest['predicted']}; the root key in "
               f"{out / 'owner'} — never give it to the host")


def _summary(out: Path) -> dict[str, Any]:
    manifest = load_manifest(out)
    reference = parse_file(out / "reference-values.json", "", load_reference_values)
    return {"manifest": manifest,
            "launch": {e.mode: e.digest.hex() for e in reference.launch},
            "pcrs_sha256": {str(k): v.hex() for k, v in reference.pcrs["sha256"].items()},
            "not_checked": list(reference.not_checked)}


@app.command("show")
def show(out: Path, as_json: bool = AS_JSON) -> None:
    """Read back a bundle's manifest and reference values (strictly)."""
    summary = _summary(out)
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    for line in show_lines(out, summary):
        typer.echo(line)


def show_lines(out: Path, summary: dict[str, Any]) -> list[str]:
    """``show``'s text: the manifest, a seeded image said so, the launch digests, the PCRs."""
    manifest = summary["manifest"]
    lines = [f"{out}: {manifest['chain']}, modes {', '.join(manifest['modes'])}, "
             f"seal {manifest['seal']}, cvm {manifest['cvm_version']}"]
    if manifest.get("seeded"):
        lines.append("  seeded (--seed): its keys and disk secrets follow from the seed — for "
                     "tests and demos, never for real data")
    lines += [f"  launch {mode:<8} {digest}" for mode, digest in summary["launch"].items()]
    lines += [f"  PCR {pcr:>2} sha256 {value}" for pcr, value in summary["pcrs_sha256"].items()]
    return lines


@app.command("register")
def register(
    out: Path = typer.Argument(..., help="The image bundle folder (cvm image build OUT)."),
    kbs: str = typer.Option(..., "--kbs", help="The key broker, e.g. http://127.0.0.1:8080."),
    admin_token_file: Path = typer.Option(..., "--admin-token-file",
                                          help="The broker's admin token (cvm kbs serve)."),
    resource: str = typer.Option("default/vtpm/state-key", "--resource",
                                 help="Where the state key goes: REPOSITORY/vtpm/TAG."),
    as_json: bool = AS_JSON,
) -> None:
    """Register IMAGE with a key broker: its reference values and its vTPM state key."""
    from cvm.image.kbs_registration import register as register_image

    done = register_image(out, kbs, read_admin_token(admin_token_file), resource)
    if as_json:
        typer.echo(json.dumps(done, indent=1))
        return
    for line in registration_lines(out, kbs, done):
        typer.echo(line)


def read_admin_token(path: Path) -> str:
    """The broker's admin token from ``--admin-token-file``, without its line end."""
    from cvm.cli.kbs import token_text

    return token_text(path, "--admin-token-file")


def registration_lines(out: Path, kbs: str, done: dict[str, Any]) -> list[str]:
    """``register``'s text: what the broker now holds, and what it does not check."""
    return [f"registered {out} with {kbs}: reference values v{done['reference_version']} "
            f"({len(done['measurement'])} launch digest(s)), the vTPM state key at "
            f"{done['resource']}",
            f"  not checked: {', '.join(done['unchecked'])}"]
