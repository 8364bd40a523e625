"""Every parser the CLI reaches, fed mutated real inputs: only documented exit codes, no traceback.

Seeds are real vectors (reports, certificates, event logs, firmware, signature lists) or files
cvm writes (a LUKS2 header, a GPT disk, a PE image, TPM structures). Each seed is mutated the
same way on every run (a seeded generator): bit flips, byte overwrites with boundary values,
truncations and insertions, concentrated where the headers are. The CLI may refuse any of them
with any documented exit code — what it must never do is fail as an internal bug (71) or print
a traceback.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.cli.main import execute

from .esp_disk import ESP_FIRST_LBA, write_esp_files, write_gpt_disk

DOCUMENTED = {0, 1, 2, 64, 65, 66, 67, 68, 69, 70, 74}
MUTANTS_PER_SEED = 24
BOUNDARY = (0x00, 0x01, 0x7F, 0x80, 0xFF)


def _mutants(seed: bytes, name: str, hot: int) -> list[bytes]:
    """Deterministic mutants of ``seed``; most edits land in its first ``hot`` bytes."""
    rng = random.Random(f"cvm-fuzz:{name}")
    out = []
    for index in range(MUTANTS_PER_SEED):
        data = bytearray(seed)
        span = min(len(data), hot) or 1
        kind = index % 6
        if kind == 0:  # flip a few bits
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(span)
                data[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:  # boundary bytes
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(span)] = rng.choice(BOUNDARY)
        elif kind == 2:  # a boundary u32 (sizes, counts, offsets)
            pos = rng.randrange(max(span - 4, 1))
            data[pos : pos + 4] = struct.pack("<I", rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF)))
        elif kind == 3:  # truncate
            del data[rng.randrange(len(data) or 1) :]
        elif kind == 4:  # insert junk
            pos = rng.randrange(span)
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        else:  # overwrite a run
            pos = rng.randrange(span)
            data[pos : pos + 8] = rng.randbytes(8)
        out.append(bytes(data))
    return out


def _run(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = execute(argv)
    captured = capfd.readouterr()
    return code, captured.out + captured.err


def _check(case: str, seed: bytes, hot: int, tmp_path: Path,
           argv_for: Callable[[Path], list[str]], capfd: pytest.CaptureFixture[str],
           suffix: str = ".bin") -> None:
    bad = []
    for number, mutant in enumerate(_mutants(seed, case, hot)):
        target = tmp_path / f"{case}-{number}{suffix}"
        target.write_bytes(mutant)
        code, output = _run(argv_for(target), capfd)
        if code not in DOCUMENTED or "Traceback" in output:
            bad.append(f"mutant {number}: exit {code}: {output.strip()[-300:]}")
    assert bad == [], f"{case}: " + "\n".join(bad)


@pytest.fixture(scope="module")
def luks_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("luks")
    image, key = folder / "disk.img", folder / "key"
    key.write_bytes(b"fuzz passphrase")
    with image.open("wb") as handle:
        handle.truncate(17 << 20)
    code = execute(["luks", "format", str(image), "--key-file", str(key), "--pbkdf", "pbkdf2",
                    "--pbkdf-force-iterations", "1000"])
    assert code == 0
    return image.read_bytes()[: 16 << 20]


def test_report_show(vectors: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    seed = (vectors / "snp/go-sev-guest/verify/testdata/attestation.bin").read_bytes()
    _check("report-show", seed, len(seed), tmp_path, lambda p: ["report", "show", str(p)], capfd)


def test_report_verify_with_a_mutated_vcek(
    vectors: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    testdata = vectors / "snp/go-sev-guest/verify/testdata"
    seed = (testdata / "vcek.testcer").read_bytes()
    report, chain = testdata / "attestation.bin", testdata / "milan.testcer"
    _check("report-vcek", seed, len(seed), tmp_path,
           lambda p: ["report", "verify", str(report), "--vcek", str(p), "--chain", str(chain),
                      "--product", "Milan", "--at", "2024-01-01T00:00:00"], capfd)


def test_report_verify_with_a_mutated_report(
    vectors: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    testdata = vectors / "snp/go-sev-guest/verify/testdata"
    seed = (testdata / "attestation.bin").read_bytes()
    vcek, chain = testdata / "vcek.testcer", testdata / "milan.testcer"
    _check("report-verify", seed, len(seed), tmp_path,
           lambda p: ["report", "verify", str(p), "--vcek", str(vcek), "--chain", str(chain),
                      "--product", "Milan", "--at", "2024-01-01T00:00:00"], capfd)


@pytest.mark.parametrize("log", ["realboot/eventlog.bin", "tpm/tpm2-tools/event-uefi-sha1-log.bin",
                                 "tpm/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin"])
@pytest.mark.parametrize("verb", ["show", "replay"])
def test_eventlog(log: str, verb: str, vectors: Path, tmp_path: Path,
                  capfd: pytest.CaptureFixture[str]) -> None:
    seed = (vectors / log).read_bytes()
    _check(f"eventlog-{verb}-{Path(log).stem}", seed, 4096, tmp_path,
           lambda p: ["eventlog", verb, str(p)], capfd)


def test_measure_with_mutated_firmware(
    vectors: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seed = (vectors / "snp/sev-snp-measure/tests/fixtures/svsm_ovmf.fd").read_bytes()
    tail = len(seed) - 4096
    mutants = [seed[:tail] + mutant[:4096] for mutant in _mutants(seed[tail:], "measure", 4096)]
    bad = []
    for number, mutant in enumerate(mutants):
        target = tmp_path / f"ovmf-{number}.fd"
        target.write_bytes(mutant)
        code, output = _run(["measure", "--mode", "snp", "--ovmf", str(target), "--vcpus", "1",
                             "--vcpu-type", "EPYC-v4"], capfd)
        if code not in DOCUMENTED or "Traceback" in output:
            bad.append(f"mutant {number}: exit {code}: {output.strip()[-300:]}")
    assert bad == []


def test_luks_dump(luks_image: bytes, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    header = luks_image[: 0x8000]
    padded = [m + luks_image[len(m):] if len(m) < len(luks_image) else m
              for m in _mutants(header, "luks-dump", 0x8000)]
    bad = []
    for number, mutant in enumerate(padded):
        target = tmp_path / f"luks-{number}.img"
        target.write_bytes(mutant)
        code, output = _run(["luks", "dump", str(target)], capfd)
        if code not in DOCUMENTED or "Traceback" in output:
            bad.append(f"mutant {number}: exit {code}: {output.strip()[-300:]}")
    assert bad == []


def test_gpt_show(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from cvm.formats.gpt.header import LBA_SIZE
    from cvm.formats.gpt.partition_entry import PartitionEntry
    from cvm.formats.gpt.partition_table import PartitionTable
    from cvm.formats.gpt.partition_types import ESP
    from cvm.wire import Guid

    disk = bytearray(4 << 20)
    esp = PartitionEntry(ESP, Guid.parse("0fc63daf-8483-4772-8e79-3d69d8477de4"), 2048,
                         4095, name="EFI System")
    table = PartitionTable.create(len(disk) // LBA_SIZE, [esp],
                                  Guid.parse("11111111-2222-3333-4444-555555555555"))
    for offset, data in table.blocks():
        disk[offset : offset + len(data)] = data
    _check("gpt", bytes(disk), 0x4400, tmp_path, lambda p: ["gpt", "show", str(p)], capfd)


def test_pe_show_and_hash(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                          make_uki: Callable[[bytes, str, bytes], bytes]) -> None:
    seed = make_uki(b"kernel" * 100, "console=ttyS0", b"initrd")
    _check("pe-show", seed, 1024, tmp_path, lambda p: ["pe", "show", str(p)], capfd)
    _check("pe-hash", seed, 1024, tmp_path, lambda p: ["pe", "hash", str(p)], capfd)


def test_sb_verify_with_a_mutated_signature_list(
    vectors: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    make_uki: Callable[[bytes, str, bytes], bytes],
) -> None:
    image = tmp_path / "uki.efi"
    image.write_bytes(make_uki(b"kernel" * 100, "console=ttyS0", b"initrd"))
    seed = (vectors / "secureboot/ovmf-4m-ms-dbx.esl").read_bytes()
    cert = vectors / "secureboot/ms-uefi-ca-2011.der"
    _check("sb-dbx", seed, len(seed), tmp_path,
           lambda p: ["sb", "verify", str(image), "--db", str(cert), "--dbx", str(p)], capfd,
           suffix=".esl")


def test_sb_verify_with_a_mutated_certificate(
    vectors: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    make_uki: Callable[[bytes, str, bytes], bytes],
) -> None:
    image = tmp_path / "uki.efi"
    image.write_bytes(make_uki(b"kernel" * 100, "console=ttyS0", b"initrd"))
    seed = (vectors / "secureboot/ms-uefi-ca-2011.der").read_bytes()
    _check("sb-cert", seed, len(seed), tmp_path,
           lambda p: ["sb", "verify", str(image), "--db", str(p)], capfd, suffix=".der")


def test_varstore_show(vectors: Path, tmp_path: Path,
                       capfd: pytest.CaptureFixture[str]) -> None:
    """A varstore with Microsoft's KEK and CA enrolled, mutated in its headers and store."""
    enrolled = tmp_path / "enrolled.fd"
    certs = vectors / "secureboot"
    assert execute(["varstore", "enroll", "--pk", str(certs / "debian-ovmf-pk-kek.pem"),
                    "--kek", str(certs / "ms-kek-ca-2011.pem"),
                    "--db", str(certs / "ms-uefi-ca-2011.pem"), "-o", str(enrolled)]) == 0
    seed = enrolled.read_bytes()
    _check("varstore", seed, 0x2000, tmp_path, lambda p: ["varstore", "show", str(p)], capfd,
           suffix=".fd")


def test_tpm_inspect(vectors: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    seed = (vectors / "tpm/tpm2-tools/ek-template-default.bin").read_bytes()
    _check("tpm-inspect", seed, len(seed), tmp_path, lambda p: ["tpm", "inspect", str(p)], capfd)


def test_luks_token_import(luks_image: bytes, tmp_path: Path,
                           capfd: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(luks_image + bytes(1 << 20))
    seed = b'{"type": "systemd-tpm2", "keyslots": ["0"], "tpm2-pcrs": [7]}'
    _check("token", seed, len(seed), tmp_path,
           lambda p: ["luks", "token", "import", str(image), "--json-file", str(p)], capfd,
           suffix=".json")


def test_pcr_predict_from_a_mutated_disk(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                         require_tool: Callable[[str], str]) -> None:
    from cvm.formats.gpt.header import LBA_SIZE
    from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
    from cvm.formats.uefi.varstore import Varstore

    require_tool("mformat")
    tree = tmp_path / "tree"
    (tree / "EFI/BOOT").mkdir(parents=True)
    (tree / "EFI/BOOT/BOOTX64.EFI").write_bytes(build_pe([SectionSpec(".text", b"\xc3", CODE)]))
    disk = tmp_path / "disk.img"
    write_gpt_disk(disk)
    write_esp_files(disk, tree)
    varstore = tmp_path / "vars.fd"
    varstore.write_bytes(Varstore.empty_4m().to_bytes())
    image = disk.read_bytes()
    esp_start = ESP_FIRST_LBA * LBA_SIZE
    hot = image[esp_start : esp_start + 0x40000]  # boot sector, FATs, root directory
    bad = []
    for number, mutant in enumerate(_mutants(hot, "pcr-disk", len(hot))):
        target = tmp_path / f"disk-{number}.img"
        target.write_bytes(image[:esp_start] + mutant[: len(hot)].ljust(len(hot), b"\0")
                           + image[esp_start + len(hot):])
        code, output = _run(["pcr", "predict", str(target), "--varstore", str(varstore)], capfd)
        if code not in DOCUMENTED or "Traceback" in output:
            bad.append(f"mutant {number}: exit {code}: {output.strip()[-300:]}")
    assert bad == []
