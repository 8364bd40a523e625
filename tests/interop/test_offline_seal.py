"""Sealing to a TPM cvm never touched: swtpm + tpm2-tools import and unseal cvm's duplicate.

The owner reads only the storage root key's public part (``tpm2_createprimary`` +
``tpm2_readpublic``, as ``systemd-tpm2-setup`` publishes it) and the PCR values; cvm builds the
sealed object and its duplicate for that SRK offline. The real TPM imports it (TPM2_Import,
which checks the outer HMAC), loads it, and unseals it in a PolicyPCR session — and refuses to
once a PCR differs (TPM_RC_POLICY_FAIL), or the duplicate was altered (TPM_RC_INTEGRITY).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.errors import UsageError
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.tpm2b import parse_tpm2b, tpm2b
from cvm.image.offline_seal import ImportableSeal, seal_for_import
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.templates import sealed_template

pytestmark = pytest.mark.interop
Run = Callable[..., object]
SRK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
SECRET = b"volume key of a root the host never sees"


def _srk(run: Callable[..., object], workdir: Path) -> Public:
    run("tpm2_flushcontext", "-t")
    run("tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "ecc256:aes128cfb",
        "-a", SRK_ATTRIBUTES, "-c", "srk.ctx", "-Q")
    run("tpm2_readpublic", "-c", "srk.ctx", "-o", "srk.pub", "-Q")
    return Public.from_bytes(parse_tpm2b((workdir / "srk.pub").read_bytes(), "TPM2B_PUBLIC"))


def _write(workdir: Path, seal: ImportableSeal, duplicate: bytes | None = None) -> None:
    (workdir / "obj.pub").write_bytes(tpm2b(seal.public.to_bytes()))
    (workdir / "obj.dpriv").write_bytes(tpm2b(duplicate or seal.duplicate))
    (workdir / "obj.seed").write_bytes(tpm2b(seal.encrypted_seed))


def _unseal(run: Callable[..., object], workdir: Path) -> object:
    for step in (("tpm2_flushcontext", "-t"), ("tpm2_flushcontext", "-s"),
                 ("tpm2_import", "-C", "srk.ctx", "-u", "obj.pub", "-i", "obj.dpriv",
                  "-s", "obj.seed", "-r", "obj.priv", "-Q"),
                 ("tpm2_flushcontext", "-t"),
                 ("tpm2_load", "-C", "srk.ctx", "-u", "obj.pub", "-r", "obj.priv",
                  "-c", "obj.ctx", "-Q"),
                 ("tpm2_flushcontext", "-t"),
                 ("tpm2_startauthsession", "--policy-session", "-S", "session.ctx"),
                 ("tpm2_policypcr", "-S", "session.ctx", "-l", "sha256:7,8", "-Q")):
        done = run(*step, check=False)
        if done.returncode:  # type: ignore[attr-defined]
            return done
    return run("tpm2_unseal", "-c", "obj.ctx", "-p", "session:session.ctx", check=False)


def _pcrs(run: Callable[..., object], workdir: Path) -> list[bytes]:
    values = []
    for pcr in (7, 8):
        run("tpm2_pcrread", f"sha256:{pcr}", "-o", f"pcr{pcr}.bin", "-Q")
        values.append((workdir / f"pcr{pcr}.bin").read_bytes())
    return values


def test_a_real_tpm_imports_and_unseals_only_for_the_predicted_pcrs(
    tools: tuple[Run, Path], require_tool: Callable[[str], str]
) -> None:
    run, workdir = tools
    for tool in ("tpm2_import", "tpm2_unseal", "tpm2_policypcr"):
        require_tool(tool)
    srk = _srk(run, workdir)
    selection = PcrSelectionList.of("sha256", [7, 8])
    policy = PolicyDigest.start().pcr(selection, _pcrs(run, workdir)).value
    seal = seal_for_import(srk, SECRET, policy, os.urandom)
    assert seal.public.auth_policy == policy

    _write(workdir, seal)
    done = _unseal(run, workdir)
    assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
    assert done.stdout.encode("latin-1") == SECRET  # type: ignore[attr-defined]

    tampered = bytearray(seal.duplicate)
    tampered[-1] ^= 1
    _write(workdir, seal, bytes(tampered))
    done = _unseal(run, workdir)
    assert done.returncode and "0x" in done.stderr  # type: ignore[attr-defined]
    assert "integrity" in done.stderr.lower()  # type: ignore[attr-defined]

    _write(workdir, seal)
    run("tpm2_pcrextend", "8:sha256=" + "11" * 32)
    done = _unseal(run, workdir)
    assert done.returncode  # type: ignore[attr-defined]
    assert "0x99d" in done.stderr.lower() or "policy" in done.stderr.lower()  # type: ignore


def test_only_a_storage_key_is_a_parent() -> None:
    with pytest.raises(UsageError, match="ECC"):
        seal_for_import(sealed_template(), SECRET, bytes(32), os.urandom)
