"""``cvm``'s front door, one decision at a time: each kind of error becomes its one line and
exit code (the traceback only with ``--debug``), the help with its placeholders, the commands
listed and imported on first use."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Annotated

import pytest
import typer

from cvm.cli import main
from cvm.cli.main import execute
from cvm.errors import FormatError, PolicyError

RAISED: list[BaseException | None] = [None]


def boom(path: Path, count: int = 1, names: list[str] | None = None,
         label: str = "x", ratio: float = 1.0, flag: bool = False) -> int | None:
    """A command for the tests: raises what RAISED holds, else returns ``count``."""
    error = RAISED[0]
    if error is not None:
        raise error
    return count if count != 1 else None


@pytest.fixture
def command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(main.COMMANDS, "boom", (__name__, "boom", "Raise for the tests."))
    monkeypatch.setitem(sys.modules, __name__, sys.modules[__name__])
    RAISED[0] = None


@pytest.mark.parametrize(("error", "code", "line"), [
    (typer.Abort(), 130, "aborted"),
    (FormatError("a bad field"), 65, "a bad field"),
    (PolicyError("refused"), 67, "refused"),
    (FileNotFoundError(2, "No such file or directory", "/x/y"), 74,
     "No such file or directory: /x/y"),
    (OSError(5, "Input/output error"), 74, "Input/output error"),
    (OSError("no strerror"), 74, "no strerror"),
    (ValueError("a bug"), 71, "internal error (ValueError: a bug); rerun with --debug"),
])
def test_each_error_is_one_line_and_its_code(command: None, capsys: pytest.CaptureFixture[str],
                                             error: BaseException, code: int,
                                             line: str) -> None:
    RAISED[0] = error
    assert execute(["boom", "p"]) == code
    assert capsys.readouterr() == ("", f"cvm: error: {line}\n")


def test_an_interrupt_in_a_command_is_130_without_a_line(
        command: None, capsys: pytest.CaptureFixture[str]) -> None:
    RAISED[0] = KeyboardInterrupt()
    assert execute(["boom", "p"]) == 130
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("error", [FormatError("a bad field"), OSError(5, "I/O"),
                                   ValueError("a bug")])
def test_debug_shows_the_traceback_first(command: None, capsys: pytest.CaptureFixture[str],
                                         error: BaseException) -> None:
    RAISED[0] = error
    assert execute(["--debug", "boom", "p"]) in (65, 74, 71)
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1].startswith("cvm: error: ")


def test_a_usage_error_of_typer_is_64_with_the_traceback_only_when_asked(
        command: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["boom", "p", "--count", "many"]) == 64
    err = capsys.readouterr().err
    assert err.startswith("cvm: error: Invalid value for '--count'") and err.count("\n") == 1
    assert execute(["--debug", "boom", "p", "--count", "many"]) == 64
    assert capsys.readouterr().err.startswith("Traceback (most recent call last):")


def test_a_commands_integer_result_is_the_exit_code(command: None) -> None:
    assert execute(["boom", "p", "--count", "5"]) == 5
    assert execute(["boom", "p"]) == 0


def test_a_group_without_a_verb_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["kbs"]) == 0
    out = capsys.readouterr().out
    assert "serve" in out and "admin" in out
    assert execute([]) == 0
    assert "Exit codes:" in capsys.readouterr().out


def test_the_help_names_each_placeholder(command: None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["boom", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage: cvm boom [OPTIONS] PATH" in out
    assert "--count N" in out and "--names TEXT" in out and "--label TEXT" in out
    assert "--ratio NUMBER" in out and "--flag" in out and "--flag " not in out.replace(
        "--flag / --no-flag", "")
    assert "<" not in out


def test_an_optional_and_a_repeated_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["pcr", "predict", "--help"]) == 0
    assert "Usage: cvm pcr predict [OPTIONS] [DISK]" in capsys.readouterr().out
    assert execute(["attack", "--help"]) == 0
    capsys.readouterr()


def test_the_root_lists_every_command_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, _, text) in main.COMMANDS.items():
        assert f"  {name}" in out and text in out
    assert out.index("  demo") < out.index("  kbs")
    group = typer.main.get_command(main.app)
    assert group.list_commands(None)[-len(main.COMMANDS):] == list(main.COMMANDS)  # type: ignore[attr-defined,arg-type]


def test_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["--version", "kbs"]) == 0
    assert capsys.readouterr().out == f"cvm {main.__version__}\n"
    main._version(False)


def test_run_exits_with_executes_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["cvm", "--frobnicate"])
    with pytest.raises(SystemExit) as stop:
        main.run()
    assert stop.value.code == 64


def test_an_unknown_command_is_64(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["frobnicate"]) == 64
    assert capsys.readouterr().err.startswith("cvm: error: No such command 'frobnicate'")


def many(first: Path, rest: Annotated[list[Path] | None, typer.Argument()] = None) -> None:
    """A command for the tests: a repeated optional argument after a required one."""


def maybe(name: Annotated[str, typer.Argument(metavar="THING")] = "x") -> None:
    """A command for the tests: an optional argument with a metavar of its own."""


@pytest.fixture
def arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(main.COMMANDS, "many", (__name__, "many", "Repeated."))
    monkeypatch.setitem(main.COMMANDS, "maybe", (__name__, "maybe", "Optional."))
    monkeypatch.setitem(sys.modules, __name__, sys.modules[__name__])


def _arguments_section(out: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index("Arguments:") + 1
    return [line.split()[0] for line in lines[start:lines.index("", start)]]


def test_a_repeated_and_an_optional_argument_in_the_usage_and_the_list(
        arguments: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["many", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: cvm many [OPTIONS] FIRST [REST...]\n")
    assert _arguments_section(out) == ["FIRST", "REST..."]
    assert execute(["maybe", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: cvm maybe [OPTIONS] [THING]\n")
    assert _arguments_section(out) == ["THING"]


def test_an_arguments_own_metavar_is_shown_without_braces_or_double_brackets(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["attest", "appraise", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: cvm attest appraise [OPTIONS] EVIDENCE\n")
    assert _arguments_section(out) == ["EVIDENCE"] and "{" not in out
    assert execute(["pcr", "predict", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: cvm pcr predict [OPTIONS] [DISK]\n")
    assert _arguments_section(out) == ["DISK"]


def test_the_commands_of_a_group_get_placeholders_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["attack", "run", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: cvm attack run [OPTIONS] NAME\n")
    assert "  --mode TEXT " in out and "  --seed N " in out and "<" not in out


def test_a_command_keeps_the_name_it_is_listed_under(
        command: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(main.COMMANDS, "bang", (__name__, "boom", "Another name."))
    assert execute(["bang", "p", "--count", "4"]) == 4
    assert execute(["bang", "--help"]) == 0
    assert capsys.readouterr().out.startswith("Usage: cvm bang [OPTIONS] PATH\n")


def test_the_root_help_heads_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("Commands:")
    assert [line.split()[0] for line in lines[start + 1:start + 1 + len(main.COMMANDS)]] == list(
        main.COMMANDS)
    assert lines[-1].endswith("74 a file could not be read or written; 130 interrupted (Ctrl-C).")


CVM = [sys.executable, "-c", "from cvm.cli.main import run; run()"]


def test_ctrl_c_in_a_running_command_is_130_without_a_line_or_a_traceback(
        tmp_path: Path) -> None:
    """A real ``cvm`` interrupted by SIGINT while it waits for a broker that never answers:
    typer turns the KeyboardInterrupt into exit 130 and prints nothing."""
    token = tmp_path / "token"
    token.write_text("t" * 32 + "\n")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(60)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with subprocess.Popen([*CVM, "kbs", "admin", url, "--admin-token-file", str(token),
                               "--audit"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as process:
            try:
                connection, _ = silent.accept()  # the command now waits for the answer
                with connection:
                    assert connection.recv(1024).startswith(b"GET /kbs/v0/audit")
                    process.send_signal(signal.SIGINT)
                    out, err = process.communicate(timeout=30)
            finally:
                process.kill()
    assert (process.returncode, out, err) == (130, b"", b"")


def _read_until(pipe: IO[bytes], end: bytes) -> bytes:
    """What ``pipe`` gives up to ``end``, within 60 seconds."""
    seen = b""
    while not seen.endswith(end):
        ready, _, _ = select.select([pipe], [], [], 60)
        byte = os.read(pipe.fileno(), 1) if ready else b""  # unbuffered: select sees all
        assert byte, seen
        seen += byte
    return seen


def test_ctrl_c_at_a_prompt_is_aborted_130(tmp_path: Path) -> None:
    """A real ``cvm`` interrupted by SIGINT while it prompts for a PIN (no terminal: the PIN
    would be read from stdin): "aborted", exit 130."""
    values = tmp_path / "values"
    values.write_bytes(bytes(32))
    with subprocess.Popen(
            [*CVM, "luks", "enroll-tpm2", str(tmp_path / "image"), "--key-file",
             str(tmp_path / "key"), "--tpm-state", str(tmp_path / "state"), "--pcrs", "23",
             "--pcr-values", str(values), "--pin"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True) as process:
        try:
            assert process.stdout is not None
            _read_until(process.stdout, b"TPM2 PIN:")
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()
    assert process.returncode == 130 and out == b"\n"
    assert err.endswith(b"cvm: error: aborted\n") and b"Traceback" not in err
