"""tpm2-tools' hash and event sequences on the cvm vTPM (data over MAX_DIGEST_BUFFER).

``tpm2_hash``, ``tpm2_sign`` of a message file, ``tpm2_hmac`` and ``tpm2_pcrevent`` of a file
switch from TPM2_Hash / TPM2_HMAC / TPM2_PCR_Event to TPM2_HashSequenceStart or
TPM2_HMAC_Start, TPM2_SequenceUpdate and TPM2_SequenceComplete / TPM2_EventSequenceComplete for
more than 1024 bytes. The vTPM here goes
through its volatile encoding after every command, as the SVSM keeps it, so every sequence's
state crosses the bytes between commands.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cvm.formats.tpm2.constants import TPM_GENERATED_VALUE, TpmAlg, TpmRh, TpmSt
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.formats.tpm2.signature import Ticket
from cvm.vtpm.engine import Tpm
from cvm.vtpm.mssim_server import MssimServer
from cvm.vtpm.volatile import VolatileState

pytestmark = pytest.mark.interop
FIVE_KIB = bytes((index * 7 + 3) % 251 for index in range(5 * 1024))


class EncodedTpm(Tpm):
    """A vTPM whose volatile state is encoded and decoded after every command."""

    encoded: int = 0

    def execute(self, data: bytes, locality: int = 0) -> bytes:
        response = super().execute(data, locality)
        self.restore_volatile(VolatileState.from_bytes(self.volatile().to_bytes()))
        self.encoded += bool(self.sequences)
        return response


@pytest.fixture
def vtpm(require_tool: Callable[[str], str], tmp_path: Path, free_port_pair: Callable[[], int],
         tool_runner: Callable[[Path, str, float], Any]) -> Iterator[dict[str, Any]]:
    for tool in ("tpm2_hash", "tpm2_sign", "tpm2_pcrevent", "tpm2_pcrread", "openssl"):
        require_tool(tool)
    port = free_port_pair()
    tpm = EncodedTpm()
    server = MssimServer(tpm, port)
    server.start()
    try:
        yield {"run": tool_runner(tmp_path, f"mssim:host=127.0.0.1,port={port}", 120),
               "dir": tmp_path, "tpm": tpm}
    finally:
        server.stop()


@pytest.mark.parametrize(("bank", "name"), [("sha256", "sha256"), ("sha384", "sha384")])
def test_tpm2_hash_of_5_kib_is_the_digest_with_the_owner_ticket(vtpm: dict[str, Any], bank: str,
                                                                 name: str) -> None:
    run, workdir, tpm = vtpm["run"], vtpm["dir"], vtpm["tpm"]
    (workdir / "data.bin").write_bytes(FIVE_KIB)
    run("tpm2_hash", "-C", "o", "-g", bank, "-o", "digest.bin", "-t", "ticket.bin", "data.bin")
    value = (workdir / "digest.bin").read_bytes()
    assert value == hashlib.new(name, FIVE_KIB).digest()
    ticket = Ticket.from_bytes((workdir / "ticket.bin").read_bytes())
    assert ticket.tag == TpmSt.HASHCHECK and ticket.hierarchy == TpmRh.OWNER
    assert ticket.digest  # a real ticket, checked below by TPM2_Sign
    assert tpm.encoded >= 5 and not tpm.sequences  # five updates crossed the bytes; flushed


def _ak(run: Any) -> None:
    run("tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub")
    run("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s",
        "ecdsa", "-u", "ak.pem", "-f", "pem")
    run("tpm2_flushcontext", "-t")


def test_the_ticket_of_a_5_kib_hash_lets_the_restricted_ak_sign(vtpm: dict[str, Any]) -> None:
    run, workdir = vtpm["run"], vtpm["dir"]
    (workdir / "message.bin").write_bytes(FIVE_KIB)
    _ak(run)
    run("tpm2_hash", "-C", "o", "-g", "sha256", "-o", "digest.bin", "-t", "ticket.bin",
        "message.bin")
    run("tpm2_sign", "-c", "ak.ctx", "-g", "sha256", "-d", "-t", "ticket.bin", "-f", "plain",
        "-o", "by-ticket.sig", "digest.bin")
    run("tpm2_flushcontext", "-t")
    encoded = vtpm["tpm"].encoded
    # the message file itself: tpm2_sign hashes it on the TPM (a sequence) for the ticket
    run("tpm2_sign", "-c", "ak.ctx", "-g", "sha256", "-f", "plain", "-o", "by-message.sig",
        "message.bin")
    for signature in ("by-ticket.sig", "by-message.sig"):
        verified = run("openssl", "dgst", "-sha256", "-verify", "ak.pem", "-signature",
                       signature, "message.bin")
        assert "Verified OK" in verified.stdout
    assert vtpm["tpm"].encoded >= encoded + 5  # tpm2_sign's own hash was a sequence


def test_tpm2_hash_of_what_could_be_an_attestation_gets_no_usable_ticket(
        vtpm: dict[str, Any]) -> None:
    run, workdir = vtpm["run"], vtpm["dir"]
    forged = TPM_GENERATED_VALUE.to_bytes(4, "big") + FIVE_KIB
    (workdir / "forged.bin").write_bytes(forged)
    _ak(run)
    run("tpm2_hash", "-C", "o", "-g", "sha256", "-o", "digest.bin", "-t", "ticket.bin",
        "forged.bin")
    assert (workdir / "digest.bin").read_bytes() == hashlib.sha256(forged).digest()
    ticket = Ticket.from_bytes((workdir / "ticket.bin").read_bytes())
    assert ticket == Ticket.null(TpmSt.HASHCHECK)
    refused = run("tpm2_sign", "-c", "ak.ctx", "-g", "sha256", "-d", "-t", "ticket.bin", "-f",
                  "plain", "-o", "forged.sig", "digest.bin", check=False)
    assert refused.returncode
    assert f"{for_parameter(TpmRc.TICKET, 3):#x}" in refused.stderr.lower()


def test_tpm2_pcrevent_of_5_kib_extends_pcr_16_in_every_bank(vtpm: dict[str, Any]) -> None:
    run, workdir, tpm = vtpm["run"], vtpm["dir"], vtpm["tpm"]
    (workdir / "event.bin").write_bytes(FIVE_KIB)
    printed = run("tpm2_pcrevent", "16", "event.bin").stdout
    for alg, name in ((TpmAlg.SHA1, "sha1"), (TpmAlg.SHA256, "sha256"),
                      (TpmAlg.SHA384, "sha384")):
        event = hashlib.new(name, FIVE_KIB).digest()
        assert event.hex() in printed.lower()
        expected = hashlib.new(name, bytes(len(event)) + event).digest()
        assert tpm.pcrs.read(alg, 16) == expected
        run("tpm2_pcrread", f"{name}:16", "-o", f"{name}.pcr")
        assert (workdir / f"{name}.pcr").read_bytes() == expected
    assert tpm.encoded >= 5 and not tpm.sequences


def test_tpm2_hmac_of_5_kib_is_the_keys_hmac(vtpm: dict[str, Any]) -> None:
    run, workdir, tpm = vtpm["run"], vtpm["dir"], vtpm["tpm"]
    (workdir / "data.bin").write_bytes(FIVE_KIB)
    run("tpm2_createprimary", "-C", "o", "-c", "primary.ctx")
    run("tpm2_create", "-C", "primary.ctx", "-G", "hmac", "-u", "key.pub", "-r", "key.priv")
    run("tpm2_flushcontext", "-t")
    run("tpm2_load", "-C", "primary.ctx", "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx")
    secret = next(item.sensitive.sensitive for item in tpm.objects.values()
                  if item.public.type == TpmAlg.KEYEDHASH and item.sensitive is not None)
    run("tpm2_flushcontext", "-t")
    encoded = tpm.encoded
    run("tpm2_hmac", "-c", "key.ctx", "-g", "sha256", "-o", "hmac.bin", "data.bin")
    assert (workdir / "hmac.bin").read_bytes() == hmac.new(secret, FIVE_KIB, "sha256").digest()
    assert tpm.encoded >= encoded + 5 and not tpm.sequences  # an HMAC sequence, flushed
