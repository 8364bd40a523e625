"""``cvm image build|show|register``, one decision at a time: the options each target refuses,
an existing bundle kept, the dbx digests, the kernel, the spec and keys passed to the build, the
qemu target's spec, the seeded warning and the "not checked" line.

Whole builds are tested in ``tests/image``; here every check runs before anything is built."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from cvm.cli import image
from cvm.cli.main import execute
from cvm.crypto.x509_edk2 import pem, private_key_pem
from cvm.errors import FormatError, UsageError
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.image.bundle import build_image, load_manifest
from cvm.image.keys import KeyPair, OwnerKeys
from cvm.image.qemu_target import MANIFEST
from cvm.image.reference_values import loads as load_reference_values
from cvm.image.vm_profile import PROFILES
from cvm.vtpm.templates import srk_template

QUIET: dict[str, Any] = {"mode": "sev-snp", "seal": None, "sb_key": None, "sb_cert": None,
                         "keys_dir": None, "kernel": None, "dbx": [], "vcpus": 1,
                         "vcpu_type": "EPYC-Milan", "seed": None, "kdf_cost": "default",
                         "srk_public": None, "profile": None, "cache": None}
DIGEST = "ab" * 32


def _refusal(target: str, **given: Any) -> str:
    with pytest.raises(UsageError) as refused:
        image.target_options_unused(target, **{**QUIET, **given})
    return str(refused.value)


def test_each_target_takes_its_defaults() -> None:
    image.target_options_unused("emulated", **QUIET)
    image.target_options_unused("qemu", **QUIET)


def test_a_target_other_than_emulated_or_qemu_is_refused() -> None:
    assert _refusal("kvm") == "--target 'kvm': emulated or qemu"


@pytest.mark.parametrize(("given", "name"), [
    ({"mode": "sev"}, "--mode"), ({"seal": "pcrs"}, "--seal"), ({"sb_key": Path("k")}, "--sb-key"),
    ({"sb_cert": Path("c")}, "--sb-cert"), ({"keys_dir": Path("o")}, "--keys"),
    ({"kernel": Path("k")}, "--kernel"), ({"dbx": [DIGEST]}, "--dbx"), ({"vcpus": 2}, "--vcpus"),
    ({"vcpu_type": "EPYC-Genoa"}, "--vcpu-type"), ({"kdf_cost": "fast"}, "--kdf-cost"),
])
def test_the_qemu_target_refuses_what_only_the_emulated_one_reads(given: dict[str, Any],
                                                                  name: str) -> None:
    assert _refusal("qemu", **given) == f"{name}: not for --target qemu"


def test_the_qemu_target_takes_its_own_options() -> None:
    image.target_options_unused("qemu", **{**QUIET, "srk_public": Path("srk"),
                                           "profile": "q35", "cache": Path("c"), "seed": 0})


@pytest.mark.parametrize(("given", "name"), [
    ({"srk_public": Path("srk")}, "--srk-public"), ({"profile": "q35"}, "--profile"),
    ({"cache": Path("c")}, "--cache"),
])
def test_the_emulated_target_refuses_what_only_qemu_reads(given: dict[str, Any],
                                                          name: str) -> None:
    assert _refusal("emulated", **given) == f"{name}: not for --target emulated"
    image.target_options_unused("emulated", **{**QUIET, "seed": 0, "kdf_cost": "fast",
                                               "dbx": [DIGEST], "vcpus": 2, "mode": "all"})


def test_an_existing_bundle_is_kept_unless_forced(tmp_path: Path) -> None:
    image.refuse_existing(tmp_path, "image.json", False, "an image bundle")
    (tmp_path / "image.json").write_text("{}")
    with pytest.raises(UsageError) as refused:
        image.refuse_existing(tmp_path, "image.json", False, "an image bundle")
    assert str(refused.value) == (f"{tmp_path} already holds an image bundle; give --force to "
                                  "overwrite it")
    image.refuse_existing(tmp_path, "image.json", True, "an image bundle")


@pytest.mark.parametrize("text", ["ab" * 31, "ab" * 33, "zz" * 32, "", "a" * 63])
def test_a_dbx_entry_is_exactly_a_sha256_digest(text: str) -> None:
    with pytest.raises(UsageError) as refused:
        image.dbx_digests([DIGEST, text])
    assert str(refused.value) == f"--dbx: {text!r} is not a SHA-256 digest (64 hex digits)"


def test_the_dbx_digests_are_kept_in_order() -> None:
    other = "cd" * 32
    assert image.dbx_digests([DIGEST, other]) == (bytes.fromhex(DIGEST), bytes.fromhex(other))
    assert image.dbx_digests([]) == ()


def test_the_kernel_is_read_and_must_be_a_pe_image(tmp_path: Path) -> None:
    assert image.read_kernel(None) is None
    with pytest.raises(FileNotFoundError) as missing:  # the OS error: exit 74, the file named
        image.read_kernel(tmp_path / "none")
    assert missing.value.filename == str(tmp_path / "none")
    (tmp_path / "text").write_bytes(b"not a PE image" * 10)
    with pytest.raises(FormatError) as malformed:
        image.read_kernel(tmp_path / "text")
    assert str(malformed.value).startswith(f"--kernel {tmp_path / 'text'}: ")
    pe = build_pe([SectionSpec(".text", b"\xc3" * 64, CODE)])
    (tmp_path / "vmlinuz").write_bytes(pe)
    assert image.read_kernel(tmp_path / "vmlinuz") == pe


PLAN: dict[str, Any] = {"force": False, "chain": "uki", "mode": "sev-snp", "seal": None,
                        "sb_key": None, "sb_cert": None, "keys_dir": None, "kernel": None,
                        "dbx": [], "vcpus": 1, "vcpu_type": "EPYC-Milan", "seed": None,
                        "kdf_cost": "default"}


def _plan(out: Path, **given: Any) -> Any:
    return image.emulated_plan(out, **{**PLAN, **given})


def test_the_spec_built_is_the_one_the_options_describe(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    pe = build_pe([SectionSpec(".text", b"\xc3" * 64, CODE)])
    (tmp_path / "vmlinuz").write_bytes(pe)
    spec, keys, db = _plan(tmp_path / "out", chain="shim-grub", mode="sev,plain", seal="pcrs",
                           dbx=[DIGEST], vcpus=4, vcpu_type="EPYC-Genoa", seed=9,
                           kdf_cost="fast", kernel=tmp_path / "vmlinuz")
    assert (spec.chain, spec.modes, spec.seal, spec.vcpus, spec.vcpu_type) == (
        "shim-grub", ("plain", "sev"), "pcrs", 4, "EPYC-Genoa")
    assert (spec.seed, spec.source_date_epoch, spec.kdf_cost) == (9, 1700000000, "fast")
    assert spec.extra_dbx == (bytes.fromhex(DIGEST),) and spec.kernel == pe
    assert keys is None and db is None


def test_the_defaults_build_a_random_uki_sev_snp_image(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    spec, keys, db = _plan(tmp_path)
    assert (spec.chain, spec.modes, spec.seal, spec.seed, spec.source_date_epoch) == (
        "uki", ("sev-snp",), None, None, None)
    assert spec.kernel is None and spec.extra_dbx == () and keys is None and db is None
    assert image.build_warnings(spec) == []


def test_a_seeded_spec_is_warned_about() -> None:
    assert image.build_warnings(image.ImageSpec(seed=0)) == [image.SEEDED_WARNING]


def test_the_spec_is_checked_before_anything_is_built(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--chain: 'grub' is not one of"):
        _plan(tmp_path, chain="grub")
    with pytest.raises(UsageError, match=r"^--seal"):
        _plan(tmp_path, chain="shim-grub", seal="signed")


def test_an_existing_bundle_is_refused_before_the_keys_are_read(tmp_path: Path) -> None:
    (tmp_path / "image.json").write_text("{}")
    with pytest.raises(UsageError, match="already holds an image bundle; give --force"):
        _plan(tmp_path, keys_dir=tmp_path / "none")
    with pytest.raises(UsageError, match="owner keys: cannot read"):
        _plan(tmp_path, force=True, keys_dir=tmp_path / "none")


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("owner")
    keys = OwnerKeys.generate(random.Random(3).randbytes, vendor=False, pcr_policy=False)
    keys.save(folder / "owner")
    (folder / "db.key").write_bytes(private_key_pem(keys.db.key))
    (folder / "db.crt").write_bytes(pem(keys.db.certificate))
    return folder


def test_the_owner_keys_given_are_the_ones_built_with(tmp_path: Path, owner: Path) -> None:
    _, keys, db = _plan(tmp_path, keys_dir=owner / "owner")
    loaded = OwnerKeys.load(owner / "owner")
    assert keys is not None and db is None
    assert keys.provisioning == loaded.provisioning and keys.db.certificate == loaded.db.certificate


def test_the_db_key_given_is_the_one_signed_with(tmp_path: Path, owner: Path) -> None:
    _, keys, db = _plan(tmp_path, sb_key=owner / "db.key", sb_cert=owner / "db.crt")
    loaded = OwnerKeys.load(owner / "owner").db
    assert keys is None and isinstance(db, KeyPair)
    assert private_key_pem(db.key) == private_key_pem(loaded.key)
    assert db.certificate == loaded.certificate


@pytest.mark.parametrize("given", [{"sb_key": "db.key"}, {"sb_cert": "db.crt"}])
def test_the_db_key_and_certificate_come_together(tmp_path: Path, owner: Path,
                                                  given: dict[str, str]) -> None:
    with pytest.raises(UsageError) as refused:
        _plan(tmp_path, **{k: owner / v for k, v in given.items()})
    assert str(refused.value) == "give --sb-key and --sb-cert together (the db signing key)"


def test_reused_keys_and_a_db_key_are_not_both_taken(tmp_path: Path, owner: Path) -> None:
    with pytest.raises(UsageError) as refused:
        _plan(tmp_path, keys_dir=owner / "owner", sb_key=owner / "db.key",
              sb_cert=owner / "db.crt")
    assert str(refused.value) == "give --keys or --sb-key/--sb-cert, not both"


def test_the_qemu_spec_is_q35_without_a_seal_unless_told(tmp_path: Path) -> None:
    spec = image.qemu_spec(tmp_path, "shim-grub", None, None, False)
    assert (spec.chain, spec.profile, spec.srk) == ("shim-grub", PROFILES["q35"], None)
    other = next(name for name in PROFILES if name != "q35")
    assert image.qemu_spec(tmp_path, "uki", None, other, False).profile == PROFILES[other]


def test_the_qemu_spec_seals_to_the_srk_given(tmp_path: Path) -> None:
    srk = srk_template("ecc")
    (tmp_path / "srk.pub").write_bytes(srk.to_tpm2b())
    assert image.qemu_spec(tmp_path, "uki", tmp_path / "srk.pub", None, False).srk == srk


def test_the_qemu_spec_refuses_an_srk_it_cannot_read_or_parse(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        image.qemu_spec(tmp_path, "uki", tmp_path / "none", None, False)
    assert missing.value.filename == str(tmp_path / "none")
    (tmp_path / "srk.pub").write_bytes(b"\x00\x04abcd")
    with pytest.raises(FormatError) as malformed:
        image.qemu_spec(tmp_path, "uki", tmp_path / "srk.pub", None, False)
    assert str(malformed.value).startswith(f"--srk-public {tmp_path / 'srk.pub'}: ")


def test_the_qemu_spec_is_checked_and_an_existing_image_kept(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--chain 'grub': the qemu target builds"):
        image.qemu_spec(tmp_path, "grub", None, None, False)
    with pytest.raises(UsageError, match=r"^unknown VM profile 'nope'"):
        image.qemu_spec(tmp_path, "uki", None, "nope", False)
    (tmp_path / MANIFEST).write_text("{}")
    with pytest.raises(UsageError) as refused:
        image.qemu_spec(tmp_path, "uki", None, None, False)
    assert str(refused.value) == (f"{tmp_path} already holds a qemu image; give --force to "
                                  "overwrite it")
    assert image.qemu_spec(tmp_path, "uki", None, None, True).chain == "uki"


def test_the_build_command_refuses_before_building(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["image", "build", str(tmp_path), "--target", "qemu", "--vcpus", "2"]) == 64
    assert capsys.readouterr().err == "cvm: error: --vcpus: not for --target qemu\n"
    assert execute(["image", "build", str(tmp_path), "--dbx", "00"]) == 64
    assert capsys.readouterr().err == (
        "cvm: error: --dbx: '00' is not a SHA-256 digest (64 hex digits)\n")
    assert list(tmp_path.iterdir()) == []


def test_every_mode_given_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``--mode`` repeats like a comma list: a second one adds, it does not replace."""
    built: list[Any] = []

    def record(out: Path, spec: Any, keys: Any, db: Any = None) -> Any:
        built.append(spec.modes)
        raise UsageError("recorded")
    monkeypatch.setattr(image, "build_image", record)
    every = ("plain", "sev", "sev-es", "sev-snp")
    for given, modes in ((["--mode", "plain", "--mode", "sev-es,sev"], every[:3]),
                         (["--mode", "sev", "--mode", "all"], every), ([], ("sev-snp",))):
        assert execute(["image", "build", str(tmp_path / "out"), *given]) == 64
        assert capsys.readouterr().err == "cvm: error: recorded\n"
        assert built.pop() == modes
    assert execute(["image", "build", str(tmp_path), "--mode", "sev", "--mode", "sev-ex"]) == 64
    assert capsys.readouterr().err == ("cvm: error: --mode: 'sev-ex' is not one of plain, sev, "
                                       "sev-es, sev-snp or all\n")
    assert execute(["image", "build", str(tmp_path), "--target", "qemu", "--mode", "sev-snp",
                    "--mode", "sev"]) == 64
    assert capsys.readouterr().err.endswith("cvm: error: --mode: not for --target qemu\n")
    assert built == []


SUMMARY: dict[str, Any] = {
    "manifest": {"chain": "uki", "modes": ["sev", "sev-snp"], "seal": "signed",
                 "cvm_version": "1.0"},
    "launch": {"sev": "aa", "sev-snp": "bb"}, "pcrs_sha256": {"7": "cc", "11": "dd"}}


def test_show_tells_a_seeded_image(tmp_path: Path) -> None:
    lines = image.show_lines(tmp_path, SUMMARY)
    assert lines == [f"{tmp_path}: uki, modes sev, sev-snp, seal signed, cvm 1.0",
                     "  launch sev      aa", "  launch sev-snp  bb",
                     "  PCR  7 sha256 cc", "  PCR 11 sha256 dd"]
    seeded = {**SUMMARY, "manifest": {**SUMMARY["manifest"], "seeded": True}}
    assert image.show_lines(tmp_path, seeded)[1] == (
        "  seeded (--seed): its keys and disk secrets follow from the seed — for tests and "
        "demos, never for real data")


def test_register_tells_what_the_broker_does_not_check(tmp_path: Path) -> None:
    done = {"reference_version": 2, "measurement": ["aa", "bb"], "resource": "r/vtpm/t",
            "unchecked": ["svn", "platform_info"]}
    assert image.registration_lines(tmp_path, "http://kbs", done) == [
        f"registered {tmp_path} with http://kbs: reference values v2 (2 launch digest(s)), "
        "the vTPM state key at r/vtpm/t",
        "  not checked: svn, platform_info"]


def test_the_admin_token_is_read_without_its_line_end(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  secret-token\n")
    assert image.read_admin_token(tmp_path / "token") == "secret-token"
    with pytest.raises(FileNotFoundError) as missing:
        image.read_admin_token(tmp_path / "none")
    assert missing.value.filename == str(tmp_path / "none")
    (tmp_path / "binary").write_bytes(b"\xff\xfe token")
    with pytest.raises(FormatError) as malformed:
        image.read_admin_token(tmp_path / "binary")
    assert str(malformed.value) == (f"--admin-token-file {tmp_path / 'binary'}: not a token "
                                    "(not text)")


def test_a_db_key_or_certificate_that_cannot_be_read_is_named(tmp_path: Path,
                                                              owner: Path) -> None:
    for given in ({"sb_key": tmp_path / "none", "sb_cert": owner / "db.crt"},
                  {"sb_key": owner / "db.key", "sb_cert": tmp_path / "none"}):
        with pytest.raises(FileNotFoundError) as missing:  # the OS error: exit 74
            _plan(tmp_path, **given)
        assert missing.value.filename == str(tmp_path / "none")


def test_a_db_key_or_certificate_that_is_not_one_is_named(tmp_path: Path, owner: Path) -> None:
    (tmp_path / "junk").write_bytes(b"not PEM")
    for given, says in (({"sb_key": tmp_path / "junk", "sb_cert": owner / "db.crt"},
                         f"--sb-key {tmp_path / 'junk'}: "),
                        ({"sb_key": owner / "db.key", "sb_cert": tmp_path / "junk"},
                         f"--sb-cert {tmp_path / 'junk'}: ")):
        with pytest.raises(FormatError) as malformed:
            _plan(tmp_path, **given)
        assert str(malformed.value).startswith(says)


def test_an_srk_is_parsed_as_a_tpm2b_public(tmp_path: Path) -> None:
    (tmp_path / "srk.pub").write_bytes(b"\x00\x09abcd")
    with pytest.raises(FormatError) as malformed:
        image.qemu_spec(tmp_path, "uki", tmp_path / "srk.pub", None, False)
    assert str(malformed.value) == (f"--srk-public {tmp_path / 'srk.pub'}: TPM2B_PUBLIC: "
                                    "TPM2B_PUBLIC needs 9 bytes at offset 0x2, only 4 left")


class QemuBuild:
    """``BootInputs.fetch`` and ``build_qemu_image`` replaced: what ``_build_qemu`` passes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sealed: dict[str, Any] | None) -> None:
        self.fetched: list[tuple[Path, bool]] = []
        self.built: list[tuple[Path, Any, Any, Any]] = []
        self.sealed = sealed
        monkeypatch.setattr("cvm.image.debian_packages.BootInputs.fetch", self._fetch)
        monkeypatch.setattr("cvm.image.qemu_target.build_qemu_image", self._build)

    def _fetch(self, cache: Path, with_stub: bool) -> str:
        self.fetched.append((cache, with_stub))
        return "inputs"

    def _build(self, out: Path, spec: Any, inputs: Any, random_bytes: Any = None
               ) -> dict[str, Any]:
        self.built.append((out, spec, inputs, random_bytes))
        return {"profile": spec.profile.name, "esp": ["/a", "/b"], "sealed": self.sealed,
                "predicted": "predicted-pcrs.json"}


def test_the_qemu_build_fetches_the_chains_inputs_and_says_what_is_sealed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    build = QemuBuild(monkeypatch, {"pcrs": [7, 14]})
    image._build_qemu(tmp_path / "out", "uki", None, None, None, False, False)
    assert build.fetched == [(tmp_path / "xdg" / "cvm" / "debian", True)]
    (out, spec, inputs, random_bytes), = build.built
    assert (out, spec.chain, spec.profile.name, inputs) == (tmp_path / "out", "uki", "q35",
                                                            "inputs")
    assert random_bytes is None and spec.seed is None  # the build's own fresh randomness
    assert capsys.readouterr().out.splitlines() == [
        f"built {tmp_path / 'out'} (qemu, uki, profile q35)", "  ESP: /a, /b",
        "  root: LUKS2, key sealed to the SRK under sha256 PCR [7, 14] (token 0)",
        f"  predicted PCRs in {tmp_path / 'out' / 'predicted-pcrs.json'}; the root key in "
        f"{tmp_path / 'out' / 'owner'} — never give it to the host"]


def test_a_qemu_build_without_an_srk_says_it_is_not_sealed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    build = QemuBuild(monkeypatch, None)
    image._build_qemu(tmp_path / "out", "shim-grub", None, None, tmp_path / "cache", False,
                      False)
    assert build.fetched == [(tmp_path / "cache", False)]
    assert "  root: LUKS2, no TPM seal (no --srk-public)" in capsys.readouterr().out.splitlines()
    image._build_qemu(tmp_path / "out", "shim-grub", None, None, tmp_path / "cache", False,
                      True)
    printed = capsys.readouterr().out
    assert json.loads(printed) == {"out": str(tmp_path / "out"), "manifest": {
        "profile": "q35", "esp": ["/a", "/b"], "sealed": None,
        "predicted": "predicted-pcrs.json"}}
    assert printed.startswith('{\n "out": ')


def test_the_qemu_build_gets_the_srk_profile_and_force_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = QemuBuild(monkeypatch, None)
    srk = srk_template("ecc")
    (tmp_path / "srk.pub").write_bytes(srk.to_tpm2b())
    (tmp_path / MANIFEST).write_text("{}")
    other = next(name for name in PROFILES if name != "q35")
    image._build_qemu(tmp_path, "uki", tmp_path / "srk.pub", other, tmp_path / "cache", True,
                      True)
    (_, spec, _, _), = build.built
    assert spec.srk == srk and spec.profile == PROFILES[other]


def test_a_qemu_build_checks_before_it_fetches(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    build = QemuBuild(monkeypatch, None)
    with pytest.raises(UsageError):
        image._build_qemu(tmp_path, "grub", None, None, None, False, False)
    assert build.fetched == [] and build.built == []


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "img"
    build_image(out, image.ImageSpec(modes=("sev", "sev-snp"), kdf_cost="fast", seed=11))
    return out


def test_show_reads_the_manifest_and_the_reference_values_back(bundle: Path) -> None:
    summary = image._summary(bundle)
    reference = load_reference_values((bundle / "reference-values.json").read_bytes())
    assert summary["manifest"] == load_manifest(bundle)
    assert summary["launch"] == {"sev": reference.launch[0].digest.hex(),
                                 "sev-snp": reference.launch[1].digest.hex()}
    assert summary["pcrs_sha256"] == {str(k): v.hex()
                                      for k, v in reference.pcrs["sha256"].items()}
    assert summary["pcrs_sha256"] and summary["not_checked"] == list(reference.not_checked)
    assert summary["not_checked"]
    assert image.show_lines(bundle, summary)[1].startswith("  seeded (--seed)")


def test_show_refuses_a_bundle_without_its_reference_values(bundle: Path,
                                                            tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "img"
    shutil.copytree(bundle, copy)
    (copy / "reference-values.json").unlink()
    with pytest.raises(FileNotFoundError) as missing:  # the OS error: exit 74
        image._summary(copy)
    assert missing.value.filename == str(copy / "reference-values.json")


def test_the_qemu_spec_carries_the_seed_and_source_date_epoch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert image.qemu_spec(tmp_path, "uki", None, None, False).seed is None
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    spec = image.qemu_spec(tmp_path, "uki", None, None, False, 7)
    assert (spec.seed, spec.source_date_epoch) == (7, 1700000000)
