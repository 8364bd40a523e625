"""The CLI front door: help, version, one-line errors with documented exit codes."""

from __future__ import annotations

import pytest

from cvm import __version__
from cvm.cli.main import execute


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cvm {__version__}"


def test_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["--help"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "Exit codes" in out


def test_unknown_option_is_one_line_and_exit_64(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["--frobnicate"]) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cvm: error:")
    assert "Traceback" not in err


def test_a_verb_exit_code_reaches_the_shell() -> None:
    import typer

    from cvm.cli.main import app

    @app.command(name="fails-with-3", hidden=True)
    def fails() -> None:
        raise typer.Exit(3)

    try:
        assert execute(["fails-with-3"]) == 3
    finally:
        app.registered_commands.pop()
