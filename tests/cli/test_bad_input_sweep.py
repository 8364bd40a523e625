"""Every input file of every ``cvm`` command, fed each kind of bad input: one error line that
names the file, a documented exit code, no traceback.

For each input a command reads (its arguments and its file options), the sweep gives it: a path
that does not exist, a directory, an unreadable file (not as root, who reads anything), an empty
file, the right kind of file cut at half its size, after its header and before its last byte,
the right kind of file with one checked header byte flipped, and a valid file of another kind.
A file the OS cannot give is exit 74 (the OS error, naming the path); bad bytes are refused with
a documented code other than 74 (65 malformed, 66 not authentic, 64 a value out of range, 1 a
check that said no, 2 a wrong key, 67 refused by policy, 68 a TPM refusal) — never 71 (a bug),
never a traceback — and the one ``cvm: error:`` line names the file given.

Folder inputs (an image bundle, a boot tree, an owner folder) get the folder cases (missing, a
file instead, empty) and the file cases on the one member file the slot names.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cvm.attestation.verifier.rego_policy import DEFAULT_POLICY
from cvm.cli.main import execute

from .esp_disk import write_esp_files, write_gpt_disk

OS_CASES = ("missing", "directory", "unreadable")
CONTENT_CASES = ("empty", "half", "header-only", "last-byte-cut", "flipped", "wrong-kind")
FOLDER_CASES = ("folder-missing", "folder-is-a-file", "folder-empty")
OS_CODE = 74
USAGE_CODE = 64
BAD_BYTES_CODES = {1, 2, 64, 65, 66, 67, 68}
FAST_KDF = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]
SECRET_FILES = ("pass", "pin", "volkey", "statekey", "token")  # any bytes are a key or a PIN


@dataclass(frozen=True)
class Kind:
    """A kind of input file: how long its header is and which of its bytes a parser checks
    (negative: from the end)."""

    header: int
    flip: int


KINDS = {
    "report": Kind(0x30, 0x0),
    "cert-der": Kind(0x4, 0x0),
    "vcek": Kind(0x4, 0x0),
    "crl": Kind(0x4, 0x0),
    "cert-table": Kind(0x30, 0x30),
    "pe-signed": Kind(0x40, 0x0),
    "cert-pem": Kind(0x1C, 0x0),
    "key-pem": Kind(0x1C, 0x0),
    "chain-pem": Kind(0x1C, 0x0),
    "luks": Kind(0x1000, 0x0),
    "luks-tpm2": Kind(0x1000, 0x0),
    "pe": Kind(0x40, 0x0),
    "esl": Kind(0x1C, 0x10),
    "varstore": Kind(0x48, 0x28),
    "auth": Kind(0x28, 0x18),
    "eventlog": Kind(0x40, 0x20),
    "pcrvalues": Kind(0x8, 0x0),
    "state": Kind(0x20, 0x0),
    "keyring": Kind(0x10, 0x0),
    "blob": Kind(0x2, 0x0),
    "gptdisk": Kind(0x400, 0x200),
    "espdisk": Kind(0x400, 0x200),
    "ovmf": Kind(0x1000, -0x30),
    "svsm": Kind(0x40, -0x30),
    "pubkey-pem": Kind(0x1A, 0x0),
    "srk": Kind(0x2, 0x0),
    "token-json": Kind(0x8, 0x0),
    "evidence": Kind(0x8, 0x0),
    "reference": Kind(0x8, 0x0),
    "rego": Kind(0x8, 0x0),
    "manifest": Kind(0x8, 0x0),
    "kek": Kind(0x8, 0x0),
    "pass": Kind(0x4, 0x0),
    "pin": Kind(0x2, 0x0),
    "volkey": Kind(0x8, 0x0),
    "statekey": Kind(0x8, 0x0),
    "token": Kind(0x8, 0x0),
    "plain": Kind(0x8, 0x0),
}


@dataclass(frozen=True)
class Slot:
    """One input of one command: ``argv`` with ``{bad}`` where the input goes and ``{NAME}``
    for the good files the command also needs; ``kind`` is the input's kind; ``wrong`` a kind
    it is not; ``cases`` the cases that apply; ``may_pass`` the cases a command may accept
    (the damage is one it repairs or does not read, as cryptsetup does)."""

    argv: tuple[str, ...]
    kind: str
    wrong: str = "pe"
    cases: tuple[str, ...] = (*OS_CASES, *CONTENT_CASES)
    may_pass: tuple[str, ...] = ()
    member: str = ""  # for a folder input: the member file the content cases damage
    folder: str = ""  # the good folder of a folder input
    good_code: int | None = 0  # the exit with the good input (None: not run, it would fetch)


def _slot(text: str, kind: str, **extra: object) -> Slot:
    return Slot(tuple(text.split()), kind, **extra)  # type: ignore[arg-type]


SECRET = (*OS_CASES, "empty")
OS_ONLY = OS_CASES
# the secondary header copy repairs a flipped primary; the data area (cut short) is not read
LUKS_REPAIRS = ("flipped", "last-byte-cut")
TPM = "--keyring {keyring}"
APPRAISE = "attest appraise --trust emulated "  # the roots that sign cvm attest evidence
AT = "--at 2024-01-01T00:00:00 --allow-debug"  # the vector's report is a debug guest's
KEYRING_CASES = ("directory", "unreadable", *CONTENT_CASES)  # a missing keyring is a new one

SLOTS: dict[str, Slot] = {
    # report
    "report-show": _slot("report show {bad}", "report"),
    "report-verify/report": _slot("report verify {bad} --vcek {vcek} --chain {chain} " + AT,
                                  "report"),
    "report-verify/vcek": _slot("report verify {report} --vcek {bad} --chain {chain} " + AT,
                                "vcek"),
    "report-verify/chain": _slot("report verify {report} --vcek {vcek} --chain {bad} " + AT,
                                 "chain-pem"),
    "report-verify/crl": _slot("report verify {report} --vcek {vcek} --chain {chain} "
                               "--crl {bad} " + AT, "crl", good_code=66),  # an emulated
    # AMD's CRL: read, then refused as not the ARK's
    "report-verify/cert-table": _slot("report verify {report} --cert-table {bad} " + AT,
                                      "cert-table"),
    # measure
    "measure/ovmf": _slot("measure --mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf {bad}",
                          "ovmf"),
    "measure/kernel": _slot("measure --mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf {ovmf} "
                            "--kernel {bad}", "pe", cases=OS_ONLY),
    "measure/initrd": _slot("measure --mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf {ovmf} "
                            "--kernel {pe} --initrd {bad}", "pe", cases=OS_ONLY),
    "measure/svsm": _slot("measure --mode snp:svsm --vcpus 1 --vcpu-type EPYC-v4 "
                          "--ovmf {svsmovmf} --vars-size 0x40000 --svsm {bad}", "svsm"),
    "measure/vars-file": _slot("measure --mode snp:svsm --vcpus 1 --vcpu-type EPYC-v4 "
                               "--ovmf {svsmovmf} --svsm {svsm} --vars-file {bad}", "varstore",
                               cases=OS_ONLY, may_pass=("unreadable",)),  # only its size is read
    # luks
    "luks-format/image": _slot("luks format {bad} --key-file {pass} " + " ".join(FAST_KDF),
                               "luks", cases=(*OS_ONLY, "empty")),
    "luks-format/key-file": _slot("luks format {plain} --key-file {bad} " + " ".join(FAST_KDF),
                                  "pass", cases=SECRET),
    "luks-format/volume-key-file": _slot(
        "luks format {plain} --key-file {pass} --volume-key-file {bad} " + " ".join(FAST_KDF),
        "volkey", cases=(*OS_CASES, "empty", "half", "last-byte-cut"),
        may_pass=("half",)),  # 32 of 64 bytes: a key of the other size
    "luks-dump": _slot("luks dump {bad}", "luks", may_pass=LUKS_REPAIRS),
    "luks-test-key/image": _slot("luks test-key {bad} --key-file {pass}", "luks",
                                 may_pass=LUKS_REPAIRS),
    "luks-test-key/key-file": _slot("luks test-key {luks} --key-file {bad}", "pass",
                                    cases=SECRET),
    "luks-dump-volume-key": _slot("luks dump-volume-key {bad} --key-file {pass} -o {out}",
                                  "luks", may_pass=LUKS_REPAIRS),
    "luks-add-key/image": _slot("luks add-key {bad} --key-file {pass} --new-key-file {pin} "
                                + " ".join(FAST_KDF), "luks", may_pass=LUKS_REPAIRS),
    "luks-add-key/new-key-file": _slot("luks add-key {luks} --key-file {pass} "
                                       "--new-key-file {bad} " + " ".join(FAST_KDF), "pass",
                                       cases=SECRET),
    "luks-remove-key": _slot("luks remove-key {bad} --key-file {pass} --force", "luks",
                             may_pass=LUKS_REPAIRS),
    "luks-change-key": _slot("luks change-key {bad} --key-file {pass} --new-key-file {pin} "
                             + " ".join(FAST_KDF), "luks", may_pass=LUKS_REPAIRS),
    "luks-encrypt/plain": _slot("luks encrypt {bad} {out} --key-file {pass} "
                                + " ".join(FAST_KDF), "plain", cases=OS_ONLY),
    "luks-decrypt/image": _slot("luks decrypt {bad} {out} --key-file {pass}", "luks",
                                may_pass=("flipped",)),  # cut short: the data area is not
    # a whole number of its 4096-byte sectors, which cryptsetup refuses to open
    "luks-decrypt/volume-key-file": _slot("luks decrypt {luks} {out} --volume-key-file {bad}",
                                          "volkey", cases=(*OS_CASES, "empty", "half")),
    "luks-token-import/image": _slot("luks token import {bad} --json-file {token-json}", "luks",
                                     may_pass=LUKS_REPAIRS),
    "luks-token-import/json": _slot("luks token import {luks} --json-file {bad}", "token-json"),
    "luks-token-export": _slot("luks token export {bad} --token-id 0", "luks-tpm2",
                               may_pass=LUKS_REPAIRS),
    "luks-token-remove": _slot("luks token remove {bad} --token-id 0", "luks-tpm2",
                               may_pass=LUKS_REPAIRS),
    "luks-enroll-tpm2/image": _slot(
        "luks enroll-tpm2 {bad} --key-file {pass} --tpm-state {state} --pcrs 7 "
        "--pcr-values {pcrvalues} " + TPM, "luks", may_pass=LUKS_REPAIRS),
    "luks-enroll-tpm2/tpm-state": _slot(
        "luks enroll-tpm2 {luks} --key-file {pass} --tpm-state {bad} --pcrs 7 "
        "--pcr-values {pcrvalues} " + TPM, "state"),
    "luks-enroll-tpm2/pcr-values": _slot(
        "luks enroll-tpm2 {luks} --key-file {pass} --tpm-state {state} --pcrs 7 "
        "--pcr-values {bad} " + TPM, "pcrvalues", may_pass=("flipped",)),
    "luks-enroll-tpm2/from-eventlog": _slot(
        "luks enroll-tpm2 {luks} --key-file {pass} --tpm-state {state} --pcrs 7 "
        "--from-eventlog {bad} " + TPM, "eventlog"),
    "luks-enroll-tpm2/public-key": _slot(
        "luks enroll-tpm2 {luks} --key-file {pass} --tpm-state {state} --pcrs 7 "
        "--pcr-values {pcrvalues} --public-key {bad} " + TPM, "pubkey-pem"),
    "luks-enroll-tpm2/keyring": _slot(
        "luks enroll-tpm2 {luks} --key-file {pass} --tpm-state {state} --pcrs 7 "
        "--pcr-values {pcrvalues} --keyring {bad}", "keyring", cases=KEYRING_CASES),
    "luks-unlock-tpm2/image": _slot(
        "luks unlock-tpm2 {bad} --tpm-state {state} --eventlog {eventlog} " + TPM, "luks-tpm2",
        may_pass=LUKS_REPAIRS),
    "luks-unlock-tpm2/tpm-state": _slot(
        "luks unlock-tpm2 {luks-tpm2} --tpm-state {bad} --eventlog {eventlog} " + TPM, "state"),
    "luks-unlock-tpm2/eventlog": _slot(
        "luks unlock-tpm2 {luks-tpm2} --tpm-state {state} --eventlog {bad} " + TPM,
        "eventlog"),
    "luks-unlock-tpm2/pin-file": _slot(
        "luks unlock-tpm2 {luks-tpm2} --tpm-state {state} --eventlog {eventlog} "
        "--pin-file {bad} " + TPM, "pin", cases=OS_ONLY),
    # gpt, disk
    "gpt-show": _slot("gpt show {bad}", "gptdisk", may_pass=("flipped",)),
    "disk-build/root": _slot("disk build {out} --root {bad} --boot-dir {boot-dir} "
                             "--key-file {pass} " + " ".join(FAST_KDF), "plain",
                             cases=("missing", "unreadable")),
    "disk-build/key-file": _slot("disk build {out} --root {plain} --boot-dir {boot-dir} "
                                 "--key-file {bad} " + " ".join(FAST_KDF), "pass", cases=SECRET),
    "disk-build/volume-key-file": _slot(
        "disk build {out} --root {plain} --boot-dir {boot-dir} --key-file {pass} "
        "--volume-key-file {bad} " + " ".join(FAST_KDF), "volkey",
        cases=(*OS_CASES, "empty", "half", "last-byte-cut"), may_pass=("half",)),
    # pe, sb
    "pe-hash": _slot("pe hash {bad}", "pe", wrong="esl"),
    "pe-show": _slot("pe show {bad}", "pe", wrong="esl"),
    "sb-verify/image": _slot("sb verify {bad} --db {cert-pem}", "pe-signed", wrong="esl"),
    "sb-verify/db": _slot("sb verify {pe-signed} --db {bad}", "esl"),
    "sb-verify/dbx": _slot("sb verify {pe-signed} --db {cert-pem} --dbx {bad}", "esl",
                           good_code=1),  # the list revokes the image's signer
    "sb-verify/varstore": _slot("sb verify {pe-signed} --varstore {bad}", "varstore"),
    "sb-verify/shim": _slot("sb verify {pe-signed} --shim {bad}", "pe", wrong="esl",
                            good_code=1),  # a shim without a vendor certificate refuses it
    "sb-sign/image": _slot("sb sign {bad} --key {key-pem} --cert {cert-pem} -o {out}", "pe",
                           wrong="esl"),
    "sb-sign/key": _slot("sb sign {pe} --key {bad} --cert {cert-pem} -o {out}", "key-pem"),
    "sb-sign/cert": _slot("sb sign {pe} --key {key-pem} --cert {bad} -o {out}", "cert-pem"),
    "sb-sign/chain": _slot("sb sign {pe} --key {key-pem} --cert {cert-pem} --chain {bad} "
                           "-o {out}", "cert-pem"),
    # varstore
    "varstore-show": _slot("varstore show {bad}", "varstore"),
    "varstore-enroll/pk": _slot("varstore enroll --pk {bad} -o {out}", "cert-pem"),
    "varstore-enroll/kek": _slot("varstore enroll --pk {cert-pem} --kek {bad} -o {out}",
                                 "cert-pem"),
    "varstore-enroll/db": _slot("varstore enroll --pk {cert-pem} --db {bad} -o {out}",
                                "cert-pem"),
    "varstore-enroll/template": _slot("varstore enroll --pk {cert-pem} --template {bad} "
                                      "-o {out}", "varstore"),
    "varstore-auth/add": _slot("varstore auth db --add {bad} --key {key-pem} --cert {cert-pem} "
                               "-o {out}", "esl"),
    "varstore-auth/key": _slot("varstore auth db --add {cert-pem} --key {bad} "
                               "--cert {cert-pem} -o {out}", "key-pem"),
    "varstore-auth/cert": _slot("varstore auth db --add {cert-pem} --key {key-pem} "
                                "--cert {bad} -o {out}", "cert-pem"),
    "varstore-update/varstore": _slot("varstore update {bad} db {auth} -o {out}", "varstore"),
    "varstore-update/payload": _slot("varstore update {varstore} db {bad} -o {out}", "auth"),
    # eventlog, pcr
    "eventlog-show": _slot("eventlog show {bad}", "eventlog"),
    "eventlog-replay": _slot("eventlog replay {bad}", "eventlog"),
    "pcr-diff/predicted": _slot("pcr diff {bad} {eventlog}", "eventlog"),
    "pcr-diff/real": _slot("pcr diff {eventlog} {bad}", "eventlog"),
    "pcr-predict/disk": _slot("pcr predict {bad} --varstore {varstore}", "espdisk",
                              may_pass=("last-byte-cut",)),  # the backup GPT is not read
    "pcr-predict/varstore": _slot("pcr predict {espdisk} --varstore {bad}", "varstore"),
    "pcr-predict/firmware-log": _slot("pcr predict {espdisk} --varstore {varstore} "
                                      "--firmware-log {bad}", "eventlog"),
    # tpm
    "tpm-policy-pcr/pcr-values": _slot("tpm policy pcr --pcrs 7 --pcr-values {bad}",
                                       "pcrvalues", may_pass=("flipped",)),
    "tpm-policy-pcr/from-eventlog": _slot("tpm policy pcr --pcrs 7 --from-eventlog {bad}",
                                          "eventlog"),
    "tpm-policy-authorize": _slot("tpm policy authorize --key {bad}", "pubkey-pem"),
    "tpm-manufacture/key-file": _slot("tpm manufacture {out} --key-file {bad} " + TPM,
                                      "statekey", cases=(*OS_CASES, "empty", "half"),
                                      may_pass=("half",)),  # 32 hex digits: 32 raw bytes
    "tpm-manufacture/keyring": _slot("tpm manufacture {out} --keyring {bad}", "keyring",
                                     cases=("directory", "unreadable", *CONTENT_CASES)),
    "tpm-seal/state": _slot("tpm seal --state {bad} --pcrs 7 --pcr-values {pcrvalues} "
                            "--in {pin} -o {out} " + TPM, "state"),
    "tpm-seal/pcr-values": _slot("tpm seal --state {state} --pcrs 7 --pcr-values {bad} "
                                 "--in {pin} -o {out} " + TPM, "pcrvalues",
                                 may_pass=("flipped",)),
    "tpm-seal/from-eventlog": _slot("tpm seal --state {state} --pcrs 7 --from-eventlog {bad} "
                                    "--in {pin} -o {out} " + TPM, "eventlog"),
    "tpm-seal/in": _slot("tpm seal --state {state} --pcrs 7 --pcr-values {pcrvalues} "
                         "--in {bad} -o {out} " + TPM, "pin", cases=OS_ONLY),
    "tpm-seal/pin-file": _slot("tpm seal --state {state} --pcrs 7 --pcr-values {pcrvalues} "
                               "--pin-file {bad} --in {pin} -o {out} " + TPM, "pin",
                               cases=OS_ONLY),
    "tpm-seal/keyring": _slot("tpm seal --state {state} --pcrs 7 --pcr-values {pcrvalues} "
                              "--in {pin} -o {out} --keyring {bad}", "keyring",
                              cases=KEYRING_CASES),
    "tpm-unseal/blob": _slot("tpm unseal {bad} --state {state} --pcrs 7 --eventlog {eventlog} "
                             + TPM, "blob"),
    "tpm-unseal/state": _slot("tpm unseal {blob} --state {bad} --pcrs 7 "
                              "--eventlog {eventlog} " + TPM, "state"),
    "tpm-unseal/eventlog": _slot("tpm unseal {blob} --state {state} --pcrs 7 --eventlog {bad} "
                                 + TPM, "eventlog"),
    "tpm-unseal/pin-file": _slot("tpm unseal {blob} --state {state} --pcrs 7 "
                                 "--eventlog {eventlog} --pin-file {bad} " + TPM, "pin",
                                 cases=OS_ONLY, good_code=68),  # sealed without a PIN
    "tpm-serve/state": _slot("tpm serve --state {bad} " + TPM, "state", good_code=None),
    # image, vm, attest, kbs
    "image-build/sb-key": _slot("image build {out} --kdf-cost fast --sb-key {bad} "
                                "--sb-cert {cert-pem}", "key-pem"),
    "image-build/sb-cert": _slot("image build {out} --kdf-cost fast --sb-key {key-pem} "
                                 "--sb-cert {bad}", "cert-pem"),
    "image-build/kernel": _slot("image build {out} --kdf-cost fast --kernel {bad}", "pe",
                                wrong="esl"),
    "image-build/srk-public": _slot("image build {out} --target qemu --srk-public {bad}", "srk",
                                    cases=(*OS_CASES, "empty", "half", "flipped"),
                                    good_code=None),
    "image-build/keys": _slot("image build {out} --kdf-cost fast --keys {bad}", "key-pem",
                              folder="owner", member="db.key",
                              cases=(*FOLDER_CASES, *OS_CASES, *CONTENT_CASES)),
    "image-show": _slot("image show {bad}", "manifest", folder="bundle", member="image.json",
                        cases=(*FOLDER_CASES, *OS_CASES, *CONTENT_CASES)),
    "image-show/reference": _slot("image show {bad}", "reference", folder="bundle",
                                  member="reference-values.json",
                                  cases=(*OS_CASES, *CONTENT_CASES)),
    "image-register/admin-token-file": _slot(
        "image register {bundle} --kbs http://127.0.0.1:9 --admin-token-file {bad}", "token",
        cases=(*OS_CASES, "wrong-kind"), good_code=70),  # no broker listens on port 9
    "vm-run": _slot("vm run {bad}", "manifest", folder="bundle", member="image.json",
                    cases=(*FOLDER_CASES, *OS_CASES, *CONTENT_CASES)),
    "attest-appraise/evidence": _slot(APPRAISE + "{bad} --reference {reference}", "evidence"),
    "attest-appraise/reference": _slot(APPRAISE + "{evidence} --reference {bad}", "reference",
                                       wrong="evidence"),
    "attest-appraise/policy": _slot(APPRAISE + "{evidence} --reference {reference} "
                                    "--policy {bad}", "rego"),
    "attest-appraise/firmware": _slot(APPRAISE + "{evidence} --reference {reference} "
                                      "--firmware {bad}", "ovmf"),
    "attest-collateral-add/crl": _slot("attest collateral add {out} {bad} --trust emulated",
                                       "crl"),
    # AMD's real Milan chain: its ARK is trusted, and so the emulated CRL is not AMD's (66);
    # its first byte flipped leaves text before the ARK's intact PEM block, which is taken
    "attest-collateral-add/chain": _slot("attest collateral add {out} {crl} --chain {bad}",
                                         "chain-pem", good_code=66, cases=(
                                             *OS_CASES, *(case for case in CONTENT_CASES
                                                          if case != "flipped"))),
    "attest-evidence/owner-uki": _slot("attest evidence --nonce n --out {out} --owner {bad}",
                                       "pe", wrong="esl", folder="owner-image",
                                       member="uki.efi",
                                       cases=(*FOLDER_CASES, *OS_CASES, *CONTENT_CASES)),
    "attest-evidence/owner-varstore": _slot(
        "attest evidence --nonce n --out {out} --owner {bad}", "varstore",
        folder="owner-image", member="OVMF_VARS.fd", cases=(*OS_CASES, *CONTENT_CASES)),
    "kbs-admin/admin-token-file": _slot("kbs admin http://127.0.0.1:9 --admin-token-file {bad}",
                                        "token", cases=(*OS_CASES, "wrong-kind")),
    "kbs-admin/reference": _slot("kbs admin http://127.0.0.1:9 --admin-token-file {token} "
                                 "--reference {bad}", "reference", cases=OS_ONLY,
                                 good_code=70),
    "kbs-admin/policy": _slot("kbs admin http://127.0.0.1:9 --admin-token-file {token} "
                              "--policy {bad}", "rego", cases=OS_ONLY, good_code=70),
    "kbs-serve/kek-file": _slot("kbs serve --host 256.0.0.1 --db sqlite:///{out} "
                                "--admin-token-file {token} --kek-file {bad}", "kek",
                                cases=("directory", "unreadable", *CONTENT_CASES),
                                good_code=64),  # the address, checked after the files
    "kbs-serve/admin-token-file": _slot("kbs serve --host 256.0.0.1 --db sqlite:///{out} "
                                        "--kek-file {kek} --admin-token-file {bad}", "token",
                                        cases=("directory", "unreadable", "empty",
                                               "wrong-kind"), good_code=64),
}


@dataclass
class Corpus:
    """The good inputs, each made once per session: a file's bytes or a folder's files."""

    root: Path
    vectors: Path
    made: dict[str, bytes | dict[str, bytes]] = field(default_factory=dict, repr=False)

    def get(self, name: str) -> bytes | dict[str, bytes]:
        if name not in self.made:
            MAKERS[name](self)
        return self.made[name]

    def file(self, name: str) -> bytes:
        value = self.get(name)
        assert isinstance(value, bytes)
        return value


def _folder(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _run(argv: list[str]) -> None:
    assert execute(argv) == 0, argv


def _vector(path: str) -> Callable[[Corpus], None]:
    def make(corpus: Corpus) -> None:
        corpus.made[Path(path).name] = (corpus.vectors / path).read_bytes()
    return make


def _keys(corpus: Corpus) -> None:
    from cvm.crypto.x509_edk2 import (
        der,
        generate_rsa_key,
        issue_certificate,
        pem,
        private_key_pem,
    )

    key = generate_rsa_key()
    cert = issue_certificate("cvm sweep db", key)
    corpus.made["key-pem"] = private_key_pem(key)
    corpus.made["cert-pem"] = pem(cert)
    corpus.made["cert-der"] = der(cert)
    corpus.made["pubkey-pem"] = key.public_key().public_bytes(
        *_public_pem_format())


def _public_pem_format() -> tuple[object, object]:
    from cryptography.hazmat.primitives import serialization

    return (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _report_extras(corpus: Corpus) -> None:
    from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
    from cvm.attestation.verifier import Evidence

    evidence = Evidence.from_cert_chain(corpus.file("report"), corpus.file("vcek"),
                                        corpus.file("chain"))
    corpus.made["cert-table"] = evidence.cert_table()
    corpus.made["crl"] = RootStore.for_workspace(DEFAULT_WORKSPACE).vendor(
        "Milan", create=True).crl()


def _signed_pe(corpus: Corpus) -> None:
    signed = corpus.root / "signed.efi"
    _run(["sb", "sign", str(_in(corpus, "pe")), "--key", str(_in(corpus, "key-pem")),
          "--cert", str(_in(corpus, "cert-pem")), "-o", str(signed)])
    corpus.made["pe-signed"] = signed.read_bytes()


def _pe(corpus: Corpus) -> None:
    from cvm.formats.pe.builder import CODE, SectionSpec, build_pe

    corpus.made["pe"] = build_pe([SectionSpec(".text", b"\xc3" * 64, CODE),
                                  SectionSpec(".cmdline", b"console=ttyS0\0"),
                                  SectionSpec(".linux", b"kernel" * 64)])


def _esl(corpus: Corpus) -> None:
    from cvm.crypto.x509_edk2 import load_certificate
    from cvm.formats.uefi.guids import EFI_CERT_X509
    from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
    from cvm.wire import Guid

    owner = Guid.parse("0e0f0a0b-1c1d-4e4f-8a8b-9c9d0e0f1a1b")
    certificate = corpus.file("cert-der")
    load_certificate(certificate)
    corpus.made["esl"] = SignatureDatabase(
        (SignatureList.of(EFI_CERT_X509, owner, certificate),)).to_bytes()


def _in(corpus: Corpus, name: str) -> Path:
    path = corpus.root / name
    value = corpus.get(name)
    if isinstance(value, bytes):
        path.write_bytes(value)
    return path


def _varstore(corpus: Corpus) -> None:
    out = corpus.root / "vars.fd"
    _run(["varstore", "enroll", "--pk", str(_in(corpus, "cert-pem")), "--kek",
          str(_in(corpus, "cert-pem")), "--db", str(_in(corpus, "cert-pem")), "-o", str(out)])
    corpus.made["varstore"] = out.read_bytes()


def _auth(corpus: Corpus) -> None:
    out = corpus.root / "db.auth"
    _run(["varstore", "auth", "db", "--add", str(_in(corpus, "cert-pem")), "--key",
          str(_in(corpus, "key-pem")), "--cert", str(_in(corpus, "cert-pem")),
          "--time", "2026-01-01T00:00:00", "-o", str(out)])
    corpus.made["auth"] = out.read_bytes()


def _secrets(corpus: Corpus) -> None:
    corpus.made["pass"] = b"sweep passphrase"
    corpus.made["pin"] = b"123456"
    corpus.made["volkey"] = bytes(range(64))
    corpus.made["statekey"] = bytes(range(32)).hex().encode()
    corpus.made["token"] = b"sweep-admin-token-0123456789abcdef\n"
    corpus.made["kek"] = bytes(range(32)).hex().encode() + b"\n"
    corpus.made["plain"] = bytes(17 << 20)
    corpus.made["token-json"] = b'{"type": "sweep", "keyslots": []}'
    corpus.made["rego"] = DEFAULT_POLICY.encode()


def _luks(corpus: Corpus) -> None:
    image = corpus.root / "luks.img"
    with image.open("wb") as handle:
        handle.truncate(17 << 20)
    _run(["luks", "format", str(image), "--key-file", str(_in(corpus, "pass")),
          "--volume-key-file", str(_in(corpus, "volkey")), *FAST_KDF])
    corpus.made["luks"] = image.read_bytes()


def _pcrvalues(corpus: Corpus) -> None:
    corpus.made["pcrvalues"] = bytes(range(32))


def _tpm(corpus: Corpus) -> None:
    """A vTPM state and its keyring (always used together), a sealed blob, and a LUKS2 image
    with a systemd-tpm2 token, all from the same state."""
    from cvm.formats.tpm2.sealed_blob import SealedBlob

    state, keyring = corpus.root / "state", corpus.root / "keyring.json"
    ring = ["--keyring", str(keyring)]
    _run(["tpm", "manufacture", str(state), *ring])
    blob = corpus.root / "blob"
    log = _in(corpus, "eventlog")
    _run(["tpm", "seal", "--state", str(state), "--pcrs", "7", "--from-eventlog", str(log),
          "--in", str(_in(corpus, "pin")), "-o", str(blob), *ring])
    image = corpus.root / "luks-tpm2.img"
    image.write_bytes(corpus.file("luks"))
    _run(["luks", "enroll-tpm2", str(image), "--key-file", str(_in(corpus, "pass")),
          "--tpm-state", str(state), "--pcrs", "7", "--from-eventlog", str(log), *ring])
    corpus.made.update({"state": state.read_bytes(), "keyring": keyring.read_bytes(),
                        "blob": blob.read_bytes(), "luks-tpm2": image.read_bytes(),
                        "srk": SealedBlob.from_bytes(blob.read_bytes()).public.to_tpm2b()})


def _gpt(corpus: Corpus) -> None:
    tree = corpus.root / "tree"
    (tree / "EFI/BOOT").mkdir(parents=True)
    (tree / "EFI/BOOT/BOOTX64.EFI").write_bytes(corpus.file("pe-signed"))
    corpus.made["boot-dir"] = _folder(tree)
    disk = corpus.root / "disk.img"
    write_gpt_disk(disk)
    corpus.made["gptdisk"] = disk.read_bytes()
    write_esp_files(disk, tree)
    corpus.made["espdisk"] = disk.read_bytes()


def _bundle(corpus: Corpus) -> None:
    out = corpus.root / "bundle"
    _run(["image", "build", str(out), "--kdf-cost", "fast", "--seed", "7"])
    corpus.made["bundle"] = _folder(out)
    corpus.made["owner"] = _folder(out / "owner")
    corpus.made["manifest"] = (out / "image.json").read_bytes()


def _attest(corpus: Corpus) -> None:
    owner = corpus.root / "owner-image"
    _run(["attest", "owner", str(owner)])
    evidence = corpus.root / "evidence.json"
    _run(["attest", "evidence", "--nonce", "n", "--out", str(evidence), "--owner", str(owner)])
    corpus.made["owner-image"] = _folder(owner)
    corpus.made["evidence"] = evidence.read_bytes()
    corpus.made["reference"] = (owner / "reference.json").read_bytes()


MAKERS: dict[str, Callable[[Corpus], None]] = {
    "report": lambda c: c.made.update(report=(
        c.vectors / "snp/go-sev-guest/verify/testdata/attestation.bin").read_bytes()),
    "vcek": lambda c: c.made.update(vcek=(
        c.vectors / "snp/go-sev-guest/verify/testdata/vcek.testcer").read_bytes()),
    "chain": lambda c: c.made.update(chain=(
        c.vectors / "snp/go-sev-guest/verify/testdata/milan.testcer").read_bytes()),
    "chain-pem": lambda c: c.made.update({"chain-pem": c.file("chain")}),
    "ovmf": lambda c: c.made.update(ovmf=(
        c.vectors / "snp/sev-snp-measure/tests/fixtures/ovmf_AmdSev_suffix.bin").read_bytes()),
    "svsmovmf": lambda c: c.made.update(svsmovmf=(
        c.vectors / "snp/sev-snp-measure/tests/fixtures/svsm_ovmf.fd").read_bytes()),
    "svsm": lambda c: c.made.update(svsm=(
        c.vectors / "snp/sev-snp-measure/tests/fixtures/svsm.bin").read_bytes()),
    "eventlog": lambda c: c.made.update(eventlog=(
        c.vectors / "tpm/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin").read_bytes()),
    **dict.fromkeys(("key-pem", "cert-pem", "cert-der", "pubkey-pem"), _keys),
    "pe": _pe,
    "pe-signed": _signed_pe,
    **dict.fromkeys(("cert-table", "crl"), _report_extras),
    "esl": _esl,
    "varstore": _varstore,
    "auth": _auth,
    **dict.fromkeys(("pass", "pin", "volkey", "statekey", "token", "kek", "plain",
                     "token-json", "rego"), _secrets),
    "luks": _luks,
    "pcrvalues": _pcrvalues,
    **dict.fromkeys(("state", "keyring", "blob", "luks-tpm2", "srk"), _tpm),
    **dict.fromkeys(("gptdisk", "espdisk", "boot-dir"), _gpt),
    **dict.fromkeys(("bundle", "owner", "manifest"), _bundle),
    **dict.fromkeys(("owner-image", "evidence", "reference"), _attest),
}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory, vectors: Path) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("sweep-corpus"), vectors)


def _write(path: Path, value: bytes | dict[str, bytes]) -> None:
    """A file, written sparse (the LUKS2 and disk images are mostly zeros), or a folder."""
    if isinstance(value, dict):
        for name, data in value.items():
            _write(path / name, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        step = 1 << 16
        for start in range(0, len(value), step):
            chunk = value[start : start + step]
            if chunk.count(0) != len(chunk):
                handle.seek(start)
                handle.write(chunk)
        handle.truncate(len(value))


def damaged(good: bytes, case: str, kind: Kind, wrong: bytes) -> bytes:
    """``good`` damaged as ``case`` says."""
    if case == "empty":
        return b""
    if case == "half":
        return good[: len(good) // 2]
    if case == "header-only":
        return good[: min(kind.header, len(good) - 1)]
    if case == "last-byte-cut":  # of a text file, its last byte before the line end
        return good[: len(good.rstrip(b"\n")) - 1]
    if case == "flipped":
        data = bytearray(good)
        data[kind.flip] ^= 0xFF
        return bytes(data)
    assert case == "wrong-kind"
    return wrong


def _good_input(tmp_path: Path, corpus: Corpus, slot: Slot) -> Path:
    """Write the good input of ``slot`` into ``tmp_path``; return the path given."""
    if slot.folder:
        path = tmp_path / "bad" / slot.folder
        _write(path, corpus.get(slot.folder))
    else:
        path = tmp_path / "bad" / slot.kind
        _write(path, corpus.file(slot.kind))
    return path


@pytest.mark.parametrize("name", [n for n, s in SLOTS.items() if s.good_code is not None])
def test_each_input_taken_when_good(name: str, corpus: Corpus, tmp_path: Path,
                                    capfd: pytest.CaptureFixture[str]) -> None:
    """The control: with the good file in place every command runs as far as the sweep's
    verdicts need (0, or the one later failure named), so a refusal in the sweep is the bad
    file's."""
    slot = SLOTS[name]
    good = _good_input(tmp_path, corpus, slot)
    code = execute(_argv(tmp_path, corpus, slot, good))
    err = capfd.readouterr().err
    assert code == slot.good_code, err
    assert str(good) not in "".join(line for line in err.splitlines()
                                     if line.startswith("cvm: error:")), err


def _cases() -> list[object]:
    return [pytest.param(name, case, id=f"{name}:{case}")
            for name, slot in SLOTS.items() for case in slot.cases]


@dataclass(frozen=True)
class Outcome:
    code: int
    err: str

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("cvm: error:")]


def _bad_input(tmp_path: Path, corpus: Corpus, slot: Slot, case: str) -> Path:
    """Write the input under test for ``case`` into ``tmp_path``; return the path given."""
    if slot.folder:
        folder = tmp_path / "bad" / slot.folder
        if case == "folder-missing":
            return folder
        if case == "folder-is-a-file":
            _write(folder, b"not a folder\n")
            return folder
        if case == "folder-empty":
            folder.mkdir(parents=True)
            return folder
        tree = corpus.get(slot.folder)
        assert isinstance(tree, dict)
        _write(folder, tree)
        target = folder / slot.member
        target.unlink()
    else:
        folder = target = tmp_path / "bad" / slot.kind
        folder.parent.mkdir(parents=True)
    if case == "missing":
        pass
    elif case == "directory":
        target.mkdir()
    elif case == "unreadable":
        _write(target, corpus.file(slot.kind))
        target.chmod(0)
    else:
        _write(target, damaged(corpus.file(slot.kind), case, KINDS[slot.kind],
                               corpus.file(slot.wrong)))
    return folder


def _argv(tmp_path: Path, corpus: Corpus, slot: Slot, bad: Path) -> list[str]:
    good = tmp_path / "good"
    names: dict[str, str] = {"bad": str(bad), "out": str(tmp_path / "out")}
    for word in slot.argv:
        for name in _placeholders(word):
            if name not in names:
                _write(good / name, corpus.get(name))
                names[name] = str(good / name)
    return [word.format_map(names) if "{" in word else word for word in slot.argv]


def _placeholders(word: str) -> list[str]:
    import string

    return [name for _, name, _, _ in string.Formatter().parse(word) if name]


def _unreadable_as_root(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Root reads a file of mode 000: for root, opening anything of mode 000 under ``folder``
    fails as it does for anyone else (EACCES from every way a file is opened)."""
    real_open, real_os_open = io.open, os.open

    def denied(file: object) -> bool:
        if not isinstance(file, (str, bytes, os.PathLike)):
            return False  # a descriptor
        path = Path(os.fsdecode(file))
        try:
            return path.is_relative_to(folder) and path.stat().st_mode & 0o777 == 0
        except OSError:
            return False

    def refuse(file: object) -> None:
        if denied(file):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(file))  # type: ignore[arg-type]

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        refuse(file)
        return real_open(file, *args, **kwargs)

    def guarded_os_open(path: Any, *args: Any, **kwargs: Any) -> int:
        refuse(path)
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)


@pytest.mark.parametrize(("name", "case"), _cases())
def test_bad_input_is_one_line_naming_the_file(
    name: str, case: str, corpus: Corpus, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slot = SLOTS[name]
    bad = _bad_input(tmp_path, corpus, slot, case)
    if case == "unreadable" and os.geteuid() == 0:
        _unreadable_as_root(monkeypatch, tmp_path / "bad")
    argv = _argv(tmp_path, corpus, slot, bad)
    capfd.readouterr()
    code = execute(argv)
    outcome = Outcome(code, capfd.readouterr().err)
    shutil.rmtree(tmp_path / "good", ignore_errors=True)
    assert "Traceback" not in outcome.err, outcome.err
    if code == 0 and case in slot.may_pass:
        return
    if case in OS_CASES and slot.member:  # a folder without its member file: not the folder
        expected = {OS_CODE, USAGE_CODE}
    elif case in OS_CASES:
        expected = {OS_CODE}
    elif case in FOLDER_CASES:
        expected = BAD_BYTES_CODES | {OS_CODE}
    else:
        expected = BAD_BYTES_CODES
    assert code in expected, f"exit {code}: {outcome.err}"
    lines = outcome.error_lines()
    assert len(lines) == 1, outcome.err
    assert lines[0] == outcome.err.rstrip("\n").splitlines()[-1], outcome.err
    assert str(bad) in lines[0], lines[0]


def test_an_unreadable_file_is_unreadable_for_root_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the ``unreadable`` case run as root: each way cvm opens a file fails."""
    (tmp_path / "secret").write_bytes(b"x")
    (tmp_path / "secret").chmod(0)
    (tmp_path / "open").write_bytes(b"y")
    _unreadable_as_root(monkeypatch, tmp_path)
    for opening in (lambda path: path.read_bytes(), lambda path: open(path, "rb").close(),
                    lambda path: os.close(os.open(path, os.O_RDONLY))):
        with pytest.raises(PermissionError) as refused:
            opening(tmp_path / "secret")
        assert refused.value.errno == errno.EACCES
        assert refused.value.filename == str(tmp_path / "secret")
    assert (tmp_path / "open").read_bytes() == b"y"
