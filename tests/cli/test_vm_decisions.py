"""``cvm vm run``, one decision at a time: the mode each backend runs by default, every option a
backend or mode would not read refused by name, the bundle, the broker and the exit code.

The boot itself is tested in ``tests/guest``; here ``boot_bundle`` is replaced by a recorder
where only what the command passes on is checked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.cli import vm
from cvm.cli.main import execute
from cvm.errors import PolicyError, StatusError, UsageError
from cvm.hardware.vm import Mode

QUIET: dict[str, Any] = {"vcpus": None, "memory": "2M", "tpm_state": None, "firmware": None,
                         "id_key": None, "author_key": None, "dry_run": False, "kbs": None,
                         "kbs_resource": "default/vtpm/state-key"}


@dataclass
class Trace:
    refused: tuple[str, Exception] | None = None
    ok: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok}

    def render(self) -> str:
        return "the chain"


def _mode(backend: str, mode: str | None = None, **given: Any) -> str:
    return vm.run_mode(backend, mode, **{**QUIET, **given})


def _refusal(backend: str, mode: str | None = None, **given: Any) -> str:
    with pytest.raises(UsageError) as refused:
        _mode(backend, mode, **given)
    return str(refused.value)


def test_the_emulated_machine_runs_sev_snp_and_qemu_plain_unless_told() -> None:
    assert _mode("emulated") == "sev-snp" and _mode("qemu") == "plain"
    assert _mode("emulated", "sev") == "sev" and _mode("qemu", "sev-snp") == "sev-snp"


def test_a_backend_other_than_emulated_or_qemu_is_refused() -> None:
    assert _refusal("kvm") == "--backend 'kvm': emulated or qemu"


@pytest.mark.parametrize(("given", "says"), [
    ({"tpm_state": Path("tpm")}, "--tpm-state: not for --backend emulated"),
    ({"firmware": Path("OVMF.fd")}, "--firmware: not for --backend emulated"),
    ({"id_key": Path("id.pem")}, "--id-key: not for --backend emulated"),
    ({"author_key": Path("a.pem")}, "--author-key: not for --backend emulated"),
    ({"dry_run": True}, "--dry-run: not for --backend emulated"),
    ({"kbs_resource": "r/vtpm/t"}, "--kbs-resource: only with --kbs"),
])
def test_the_emulated_backend_refuses_what_only_qemu_reads(given: dict[str, Any],
                                                           says: str) -> None:
    assert _refusal("emulated", **given) == says


def test_the_emulated_backend_takes_a_broker_and_its_resource() -> None:
    assert _mode("emulated", kbs="http://127.0.0.1:1", kbs_resource="r/vtpm/t") == "sev-snp"
    assert _mode("emulated", vcpus=4, memory="64M") == "sev-snp"


@pytest.mark.parametrize(("mode", "given", "says"), [
    (None, {"memory": "64M"}, "--memory: not for --backend qemu --mode plain"),
    ("sev-snp", {"memory": "64M"}, "--memory: not for --backend qemu --mode sev-snp"),
    (None, {"kbs_resource": "r/vtpm/t"}, "--kbs-resource: not for --backend qemu --mode plain"),
    (None, {"vcpus": 2}, "--vcpus: not for --backend qemu --mode plain"),
    ("sev-snp", {"tpm_state": Path("tpm")}, "--tpm-state: not for --backend qemu --mode sev-snp"),
    (None, {"firmware": Path("OVMF.fd")}, "--firmware: not for --backend qemu --mode plain"),
    (None, {"id_key": Path("id.pem")}, "--id-key: not for --backend qemu --mode plain"),
    (None, {"author_key": Path("a.pem")}, "--author-key: not for --backend qemu --mode plain"),
    ("plain", {"vcpus": 2, "id_key": Path("id.pem")},
     "--vcpus, --id-key: not for --backend qemu --mode plain"),
])
def test_qemu_refuses_what_its_mode_does_not_read(mode: str | None, given: dict[str, Any],
                                                  says: str) -> None:
    assert _refusal("qemu", mode, **given) == says


def test_qemu_takes_what_its_mode_reads() -> None:
    assert _mode("qemu", tpm_state=Path("tpm"), dry_run=True, memory="2M") == "plain"
    assert _mode("qemu", "sev-snp", vcpus=4, firmware=Path("OVMF.fd"), id_key=Path("id.pem"),
                 author_key=Path("a.pem"), dry_run=True) == "sev-snp"


def test_qemu_refuses_a_broker_before_anything_else() -> None:
    assert _refusal("qemu", kbs="http://127.0.0.1:1", memory="64M") == (
        "--kbs: the emulated backend's SVSM attests; not with --backend qemu")


def test_the_refusals_reach_the_command_line_as_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["vm", "run", str(tmp_path), "--backend", "qemu", "--kbs", "http://x"]) == 64
    assert capsys.readouterr().err == (
        "cvm: error: --kbs: the emulated backend's SVSM attests; not with --backend qemu\n")
    assert execute(["vm", "run", str(tmp_path), "--backend", "kvm"]) == 64
    assert capsys.readouterr().err == "cvm: error: --backend 'kvm': emulated or qemu\n"


class Recorder:
    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.calls: list[tuple[Path, Any, dict[str, Any]]] = []

    def __call__(self, folder: Path, mode: Any, **options: Any) -> Trace:
        self.calls.append((folder, mode, options))
        return self.trace


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "image.json").write_text("{}")
    return tmp_path


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    record = Recorder(Trace())
    monkeypatch.setattr("cvm.guest.run.boot_bundle", record)
    return record


def test_a_folder_without_image_json_is_not_a_bundle(tmp_path: Path,
                                                     recorder: Recorder) -> None:
    with pytest.raises(UsageError, match=r"^.*: not an image bundle \(no image.json\)$"):
        vm.boot(tmp_path, "sev-snp", vcpus=1, memory="2M", kbs=None,
                kbs_resource="default/vtpm/state-key")
    (tmp_path / "image.json").mkdir()
    with pytest.raises(UsageError):
        vm.boot(tmp_path, "sev-snp", vcpus=1, memory="2M", kbs=None,
                kbs_resource="default/vtpm/state-key")
    assert recorder.calls == []


def test_the_boot_gets_the_mode_vcpus_memory_and_no_broker(bundle: Path,
                                                           recorder: Recorder) -> None:
    trace = vm.boot(bundle, "sev-es", vcpus=3, memory="64M", kbs=None,
                    kbs_resource="default/vtpm/state-key")
    assert trace is recorder.trace
    assert recorder.calls == [(bundle, Mode.SEV_ES, {
        "vcpus": 3, "memory_bytes": 64 << 20, "kbs": None,
        "kbs_resource": "default/vtpm/state-key", "vendor": None})]


def test_the_vcpus_are_the_images_unless_given(tmp_path: Path, recorder: Recorder) -> None:
    """An image built with ``--vcpus 3`` launches 3 vCPUs: its launch digest was predicted for
    them. ``--vcpus`` overrides it; a manifest without a usable count gives 1."""
    for manifest, given, launched in (
            ({"vcpus": 3}, None, 3), ({"vcpus": 3}, 2, 2), ({}, None, 1), ({"vcpus": 64}, None, 64),
            ({"vcpus": 0}, None, 1), ({"vcpus": 65}, None, 1), ({"vcpus": "2"}, None, 1),
            ({"vcpus": True}, None, 1), ({"vcpus": 2.0}, None, 1), ([2], None, 1)):
        (tmp_path / "image.json").write_text(json.dumps(manifest))
        vm.boot(tmp_path, "sev-snp", vcpus=given, memory="2M", kbs=None,
                kbs_resource="default/vtpm/state-key")
        assert recorder.calls.pop()[2]["vcpus"] == launched
    (tmp_path / "image.json").write_bytes(b"{")
    assert vm.image_vcpus(tmp_path) == 1


def test_with_a_broker_the_chip_is_the_installations_pinned_emulated_amd(
        bundle: Path, recorder: Recorder) -> None:
    """What a ``cvm kbs serve`` with ``--trust emulated`` trusts."""
    vm.boot(bundle, "sev-snp", vcpus=1, memory="2M", kbs="http://127.0.0.1:1",
            kbs_resource="r/vtpm/t")
    (_, mode, options), = recorder.calls
    assert mode is Mode.SEV_SNP and options["kbs"] == "http://127.0.0.1:1"
    assert options["kbs_resource"] == "r/vtpm/t"
    pinned = RootStore.for_workspace(DEFAULT_WORKSPACE).trust_anchors()
    assert options["vendor"].trust_anchor() in pinned


def test_the_exit_code_is_the_refusals_own_else_0_or_1() -> None:
    assert vm.exit_code(Trace()) == 0
    assert vm.exit_code(Trace(ok=False)) == 1
    assert vm.exit_code(Trace(("svsm", PolicyError("no")), ok=False)) == 67
    assert vm.exit_code(Trace(("initramfs", StatusError("refused", 0x99D)), ok=False)) == 68


def test_a_refusal_is_told_in_one_line_naming_the_stage() -> None:
    assert vm.refusal_line(Trace()) is None and vm.refusal_line(Trace(ok=False)) is None
    assert vm.refusal_line(Trace(("svsm", PolicyError("measurement differs")))) == (
        "cvm: error: svsm: measurement differs")


def test_the_command_prints_the_trace_the_refusal_and_exits_with_its_code(
        bundle: Path, recorder: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    recorder.trace = Trace(("svsm", PolicyError("measurement differs")), ok=False)
    assert execute(["vm", "run", str(bundle)]) == 67
    captured = capsys.readouterr()
    assert captured.out == "the chain\n"
    assert captured.err == "cvm: error: svsm: measurement differs\n"
    recorder.trace = Trace(ok=False)
    assert execute(["vm", "run", str(bundle), "--json"]) == 1
    assert capsys.readouterr().out == '{\n "ok": false\n}\n'


def test_a_boot_refused_for_what_was_asked_prints_only_its_error_line(
        bundle: Path, recorder: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    recorder.trace = Trace(("launch", UsageError("--vcpus: 0 is not between 1 and 64")),
                           ok=False)
    assert execute(["vm", "run", str(bundle)]) == 64
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "cvm: error: launch: --vcpus: 0 is not between 1 and 64\n"
    assert execute(["vm", "run", str(bundle), "--json"]) == 64  # JSON: the trace all the same
    assert capsys.readouterr().out == '{\n "ok": false\n}\n'


def test_the_trace_is_shown_unless_a_usage_error_refused_the_boot_as_text() -> None:
    assert vm.shows_trace(Trace(), False) and vm.shows_trace(Trace(ok=False), False)
    assert vm.shows_trace(Trace(("svsm", PolicyError("no"))), False)
    usage = Trace(("launch", UsageError("--memory: at least 2 MiB")))
    assert not vm.shows_trace(usage, False) and vm.shows_trace(usage, True)


@pytest.mark.parametrize(("text", "size"), [
    ("2M", 2 << 20), ("2m", 2 << 20), (" 1GiB ", 1 << 30), ("64KB", 64 << 10), ("4096", 4096)])
def test_a_memory_size_is_read_with_its_unit(text: str, size: int) -> None:
    assert vm.parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "2T", "M", "-1M", "2.5M"])
def test_a_memory_size_that_is_not_one_is_named(text: str) -> None:
    with pytest.raises(UsageError) as refused:
        vm.parse_size(text)
    assert str(refused.value) == f"--memory: {text!r} is not a size like 2M or 1G"
