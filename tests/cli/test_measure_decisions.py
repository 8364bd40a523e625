"""``cvm measure``, one decision at a time: each mode's digest against the known answers of
``tests/vectors/snp/expected_digests.txt``, the options each mode refuses, the vCPU signature
and VMM, the seed, the VMSAs dumped and every field of the report."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from cvm.cli import measure
from cvm.cli.main import execute
from cvm.errors import FormatError, UsageError
from cvm.formats.snp.vmsa import VmmType

OVMF_HASH = ("086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c"
             "467a50da6d466b74")
VARS_SIZE = 540672


def _fixtures(vectors: Path) -> Path:
    return vectors / "snp" / "sev-snp-measure" / "tests" / "fixtures"


def _report(vectors: Path, ovmf: str = "ovmf_AmdSev_suffix.bin", **given: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "mode": "snp", "ovmf": _fixtures(vectors) / ovmf, "kernel": None, "initrd": None,
        "append": None, "vcpus": None, "vcpu_type": None, "vcpu_sig": None,
        "guest_features": "0x1", "vmm_type": "qemu", "snp_ovmf_hash": None, "dump_vmsa": None,
        "svsm": None, "vars_size": None, "vars_file": None, **given}
    return measure.measurement_report(**options)


@pytest.mark.parametrize(("given", "digest"), [
    ({"vcpus": 1, "vcpu_type": "EPYC-v4"},
     "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"),
    ({"vcpus": 4, "vcpu_sig": "0x00800F12"},
     "49a5df7673889babb3ee480795e1be1571b812264c2c7cc3ac6f92298a2f8683d8c691b26d8114dd6afbd324c2150ae1"),
    ({"vcpus": 1, "vcpu_type": "EPYC-v4", "guest_features": "0x21", "kernel": Path("/dev/null"),
      "initrd": Path("/dev/null"), "append": "console=ttyS0 loglevel=7"},
     "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"),
    ({"vcpus": 1, "vcpu_type": "EPYC-v4", "guest_features": "33", "vmm_type": "EC2",
      "kernel": Path("/dev/null"), "initrd": Path("/dev/null"), "append": ""},
     "0ce9ccc06bab55eebe8abc234f3df6514883977a68a591b71052498ab52b2f1aa415db338033946ef93aa8278c0d67fb"),
    ({"vcpus": 4, "vmm_type": "gce", "kernel": Path("/dev/null"), "initrd": Path("/dev/null"),
      "append": ""},
     "5c5debf100fc339f90276e761ee1f1658d08922c3b20e2a2e6c7a6c3370b2452a15a00eae11886a93d6fd1e7ab81e29d"),
    ({"mode": "seves", "vcpus": 4, "vcpu_type": "EPYC-v4", "kernel": Path("/dev/null"),
      "initrd": Path("/dev/null"), "append": ""},
     "0dccbcaba8e90b261bd0d2e1863a2f9da714768b7b2a19363cd6ae35aa90de91"),
    ({"mode": "sev-es", "vcpus": 1, "vcpu_type": "EPYC-v4", "kernel": Path("/dev/null"),
      "initrd": Path("/dev/null"), "append": ""},
     "13810ae661ea11e2bb205621f582fee268f0367c8f97bc297b7fadef3e12002c"),
    ({"mode": "sev", "kernel": Path("/dev/null")},
     "77f613d7bbcdf12a73782ea9e88b0172aeda50d1a54201cb903594ff52846898"),
    ({"mode": "snp:ovmf-hash"}, OVMF_HASH),
])
def test_each_mode_gives_the_known_answer(vectors: Path, given: dict[str, Any],
                                          digest: str) -> None:
    assert _report(vectors, **given)["measurement"] == digest


def test_a_seed_continues_the_ovmf_hash(vectors: Path) -> None:
    seeded = _report(vectors, vcpus=1, vcpu_type="EPYC-v4", snp_ovmf_hash=OVMF_HASH)
    assert seeded["measurement"] == _report(vectors, vcpus=1, vcpu_type="EPYC-v4")["measurement"]
    with pytest.raises(FormatError) as refused:
        _report(vectors, vcpus=1, vcpu_type="EPYC-v4", snp_ovmf_hash="zz")
    assert str(refused.value) == "--snp-ovmf-hash is not hex"
    other = _report(vectors, vcpus=1, vcpu_type="EPYC-v4", snp_ovmf_hash="00" * 48)
    assert other["measurement"] != seeded["measurement"]


def test_the_snp_report_names_its_inputs(vectors: Path) -> None:
    ovmf = _fixtures(vectors) / "ovmf_AmdSev_suffix.bin"
    report = _report(vectors, vcpus=4, vcpu_type="EPYC-v4", guest_features="0x21",
                     kernel=Path("/dev/null"), initrd=Path("/dev/null"), append="")
    empty = hashlib.sha256(b"").hexdigest()
    assert report == {
        "mode": "snp", "ovmf": str(ovmf),
        "ovmf_sha256": hashlib.sha256(ovmf.read_bytes()).hexdigest(),
        "vcpus": 4, "vcpu_signature": "0x00800f12", "guest_features": "0x21",
        "vmm_type": "qemu", "kernel_hashes": {
            "kernel": empty, "initrd": empty, "cmdline": hashlib.sha256(b"\0").hexdigest()},
        "measurement": "4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78"
                       "eafe7b422907be0b4698e2414a631942"}


def test_sev_es_reports_no_guest_features_and_sev_no_vcpus(vectors: Path) -> None:
    report = _report(vectors, mode="sev-es", vcpus=1, vcpu_type="EPYC-v4",
                     guest_features="0x21", vmm_type="ec2")
    assert report["guest_features"] == "0x0" and report["vmm_type"] == "ec2"
    report = _report(vectors, mode="sev")
    assert set(report) == {"mode", "ovmf", "ovmf_sha256", "measurement"}


def test_the_svsm_mode_reports_the_svsm_and_the_known_answer(vectors: Path,
                                                             tmp_path: Path) -> None:
    svsm = _fixtures(vectors) / "svsm.bin"
    report = _report(vectors, "svsm_ovmf.fd", mode="snp:svsm", svsm=svsm,
                     vars_size=str(VARS_SIZE), vcpus=2, vcpu_type="EPYC-v4")
    assert report["measurement"] == (
        "9b94745036aafddf4f7f8b00c7513abb5b7703178cb95aaa57928bd963d68d3bfcb715d6019b9167ee2517"
        "b11b0d9be7")
    assert report["svsm"] == str(svsm) and report["vars_size"] == VARS_SIZE
    assert report["svsm_sha256"] == hashlib.sha256(svsm.read_bytes()).hexdigest()
    assert report["vcpus"] == 2 and report["vcpu_signature"] == "0x00800f12"
    assert report["vmm_type"] == "qemu"
    assert int(str(report["svsm_gpa"]), 16) == int(str(report["svsm_entry"]), 16) > 0
    assert str(report["svsm_gpa"]).startswith("0x")
    assert set(report) == {"mode", "ovmf", "ovmf_sha256", "svsm", "svsm_sha256", "svsm_gpa",
                           "svsm_entry", "vars_size", "vcpus", "vcpu_signature", "vmm_type",
                           "measurement"}
    store = tmp_path / "vars.fd"
    store.write_bytes(bytes(VARS_SIZE))
    dump = tmp_path / "vmsa"
    again = _report(vectors, "svsm_ovmf.fd", mode="snp:svsm", svsm=svsm, vars_file=store,
                    vcpus=2, vcpu_type="EPYC-v4", dump_vmsa=dump)
    assert again["measurement"] == report["measurement"]
    assert sorted(p.name for p in dump.iterdir()) == ["vmsa0.bin", "vmsa1.bin"]


@pytest.mark.parametrize(("given", "says"), [
    ({"kernel": Path("/dev/null")}, "--mode snp:svsm measures no kernel hashes"),
    ({"initrd": Path("/dev/null")}, "--mode snp:svsm measures no kernel hashes"),
    ({"append": ""}, "--mode snp:svsm measures no kernel hashes"),
    ({"snp_ovmf_hash": OVMF_HASH}, "--snp-ovmf-hash does not apply to --mode snp:svsm"),
    ({}, "--mode snp:svsm needs exactly one of --vars-size and --vars-file"),
    ({"vars_size": "1", "vars_file": Path("x")},
     "--mode snp:svsm needs exactly one of --vars-size and --vars-file"),
    ({"vars_size": "12k"}, "--vars-size: '12k' is not a number (use 0x... for hex)"),
    ({"vars_size": "0x84000"}, "--mode snp:svsm needs --svsm"),
])
def test_the_svsm_mode_refuses_what_it_does_not_measure(vectors: Path, given: dict[str, Any],
                                                        says: str) -> None:
    with pytest.raises(UsageError) as refused:
        _report(vectors, "svsm_ovmf.fd", mode="snp:svsm", vcpus=1, vcpu_type="EPYC-v4",
                **given)
    assert str(refused.value) == says


@pytest.mark.parametrize("mode", ["snp", "sev", "snp:ovmf-hash", "tdx"])
@pytest.mark.parametrize("option", ["svsm", "vars_size", "vars_file"])
def test_the_svsm_options_belong_to_its_mode(vectors: Path, mode: str, option: str) -> None:
    with pytest.raises(UsageError) as refused:
        _report(vectors, mode=mode, vcpus=1, vcpu_type="EPYC-v4", **{option: Path("1")})
    assert str(refused.value) == "--svsm, --vars-size and --vars-file belong to --mode snp:svsm"


@pytest.mark.parametrize(("given", "says"), [
    ({"kernel": Path("k")}, "--kernel"), ({"initrd": Path("i")}, "--initrd"),
    ({"append": ""}, "--append"), ({"vcpus": 1}, "--vcpus"), ({"vcpu_type": "EPYC"}, "--vcpu-type"),
    ({"vcpu_sig": "1"}, "--vcpu-sig"), ({"snp_ovmf_hash": OVMF_HASH}, "--snp-ovmf-hash"),
    ({"dump_vmsa": Path("d")}, "--dump-vmsa"),
    ({"vcpus": 2, "kernel": Path("k")}, "--kernel, --vcpus"),
])
def test_the_ovmf_hash_refuses_every_option_of_a_launch(vectors: Path, given: dict[str, Any],
                                                        says: str) -> None:
    with pytest.raises(UsageError) as refused:
        _report(vectors, mode="snp:ovmf-hash", **given)
    assert str(refused.value) == f"{says}: not for --mode snp:ovmf-hash"


def test_ovmf_hash_with_a_kernel_is_refused_not_ignored(
        vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ovmf = str(_fixtures(vectors) / "ovmf_AmdSev_suffix.bin")
    assert execute(["measure", "--mode", "snp:ovmf-hash", "--ovmf", ovmf, "--kernel",
                    "/dev/null"]) == 64
    assert capsys.readouterr() == ("", "cvm: error: --kernel: not for --mode snp:ovmf-hash\n")
    assert execute(["measure", "--mode", "snp:ovmf-hash", "--ovmf", ovmf]) == 0
    assert capsys.readouterr().out == OVMF_HASH + "\n"


@pytest.mark.parametrize(("given", "says"), [
    ({"mode": "SNP"}, "unknown --mode 'SNP'; use snp, sev-es, sev, snp:ovmf-hash or snp:svsm"),
    ({"vmm_type": "xen"}, "unknown --vmm-type 'xen'; use qemu, ec2 or gce"),
    ({"guest_features": "x"}, "--guest-features: 'x' is not a number (use 0x... for hex)"),
    ({"vcpus": None}, "--vcpus is required in this mode"),
    ({"vcpu_type": None},
     "--vcpu-type is required; known: " + ", ".join(measure.VCPU_SIGNATURES)),
    ({"vcpu_sig": "sig"}, "--vcpu-sig: 'sig' is not a number (use 0x... for hex)"),
    ({"initrd": Path("/dev/null")}, "--initrd and --append need --kernel"),
    ({"append": "quiet"}, "--initrd and --append need --kernel"),
])
def test_a_launch_refuses_in_one_line(vectors: Path, given: dict[str, Any], says: str) -> None:
    with pytest.raises(UsageError) as refused:
        _report(vectors, **{"vcpus": 1, "vcpu_type": "EPYC-v4", **given})
    assert str(refused.value) == says


def test_a_signature_wins_over_a_type_and_ec2_needs_neither(vectors: Path) -> None:
    report = _report(vectors, vcpus=1, vcpu_type="EPYC-v4", vcpu_sig="0x10")
    assert report["vcpu_signature"] == "0x00000010"
    assert _report(vectors, vcpus=1, vmm_type="ec2")["vcpu_signature"] == "0x00000000"
    assert measure.parse_vmm("GCE") is VmmType.GCE


def test_the_vmsas_are_dumped_for_snp_and_sev_es_only(vectors: Path, tmp_path: Path) -> None:
    _report(vectors, vcpus=2, vcpu_type="EPYC-v4", guest_features="0x21",
            dump_vmsa=tmp_path / "snp")
    snp = (tmp_path / "snp" / "vmsa0.bin").read_bytes()
    _report(vectors, mode="sev-es", vcpus=2, vcpu_type="EPYC-v4", guest_features="0x21",
            dump_vmsa=tmp_path / "es")
    es = (tmp_path / "es" / "vmsa0.bin").read_bytes()
    assert sorted(p.name for p in (tmp_path / "es").iterdir()) == ["vmsa0.bin", "vmsa1.bin"]
    assert snp[0x3B0:0x3B8] == (0x21).to_bytes(8, "little")
    assert es[0x3B0:0x3B8] == bytes(8)
    _report(vectors, mode="sev", dump_vmsa=tmp_path / "sev")
    assert not (tmp_path / "sev").exists()


def test_measure_prints_the_digest_or_the_report(vectors: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ovmf = str(_fixtures(vectors) / "ovmf_AmdSev_suffix.bin")
    assert execute(["measure", "--mode", "sev", "--ovmf", ovmf, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "sev"
    assert execute(["measure", "--mode", "sev", "--ovmf", ovmf]) == 0
    assert capsys.readouterr().out == report["measurement"] + "\n"


def test_the_initrd_given_is_hashed(vectors: Path, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"an initrd")
    report = _report(vectors, mode="sev", kernel=Path("/dev/null"), initrd=initrd)
    assert report["kernel_hashes"]["initrd"] == hashlib.sha256(b"an initrd").hexdigest()


def test_the_vmsas_are_dumped_into_a_new_folder_tree(vectors: Path, tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    _report(vectors, vcpus=1, vcpu_type="EPYC-v4", dump_vmsa=folder)
    assert [p.name for p in folder.iterdir()] == ["vmsa0.bin"]


def test_the_svsm_mode_takes_a_vcpu_signature(vectors: Path) -> None:
    report = _report(vectors, "svsm_ovmf.fd", mode="snp:svsm", svsm=_fixtures(vectors) / "svsm.bin",
                     vars_size=str(VARS_SIZE), vcpus=4, vcpu_sig="0x00800F12")
    assert report["measurement"] == (
        "27d154c27b7b359c935e250ec6fee72aa0ae8c1225e3b0e1cf46a9567e938066d7d6f94bbdc4a857818bdb"
        "79277a44b2")


def test_a_vmsa_dump_that_fails_keeps_the_previous_file_and_says_which(
        vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        full_disk: Callable[[int], AbstractContextManager[None]], umask: None) -> None:
    ovmf = str(_fixtures(vectors) / "ovmf_AmdSev_suffix.bin")
    dump = tmp_path / "vmsa"
    argv = ["measure", "--mode", "snp", "--ovmf", ovmf, "--vcpus", "2", "--vcpu-type",
            "EPYC-v4", "--dump-vmsa", str(dump)]
    assert execute(argv) == 0
    pages = {p.name: p.read_bytes() for p in dump.iterdir()}
    assert sorted(pages) == ["vmsa0.bin", "vmsa1.bin"]
    assert all(len(page) == 4096 for page in pages.values())
    assert all((dump / name).stat().st_mode & 0o777 == 0o644 for name in pages)
    (dump / "vmsa0.bin").write_bytes(b"previous")
    capsys.readouterr()
    with full_disk(1000):
        assert execute(argv) == 74
    assert capsys.readouterr() == ("", f"cvm: error: File too large: {dump / 'vmsa0.bin'}\n")
    assert (dump / "vmsa0.bin").read_bytes() == b"previous"
    assert sorted(p.name for p in dump.iterdir()) == ["vmsa0.bin", "vmsa1.bin"]


def test_a_pipe_where_a_vmsa_goes_is_refused_in_one_line(
        vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = tmp_path / "vmsa"
    dump.mkdir()
    os.mkfifo(dump / "vmsa0.bin")
    ovmf = str(_fixtures(vectors) / "ovmf_AmdSev_suffix.bin")
    assert execute(["measure", "--mode", "snp", "--ovmf", ovmf, "--vcpus", "1", "--vcpu-type",
                    "EPYC-v4", "--dump-vmsa", str(dump)]) == 74
    assert capsys.readouterr() == ("", "cvm: error: Not a regular file (cvm writes its outputs "
                                       f"as files): {dump / 'vmsa0.bin'}\n")
    assert stat.S_ISFIFO((dump / "vmsa0.bin").stat().st_mode)
