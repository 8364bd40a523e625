"""Entry point of the ``cvm`` command: the verb groups and the one error handler.

Every project error becomes one line on stderr and the exit code its class documents in
:mod:`cvm.errors`; ``--debug`` (anywhere on the command line) shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback

import typer

from cvm import __version__
from cvm.errors import CvmError, InternalError, UsageError

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a check ran and said no; 2 wrong key or passphrase; "
    "64 usage; 65 malformed input; 66 not authentic; 67 refused by policy; "
    "68 firmware/TPM status; 69 wrong lifecycle state; 70 external tool; 71 internal bug; "
    "74 a file could not be read or written."
)

app = typer.Typer(
    name="cvm",
    help="cvm: confidential VMs in software (SEV-SNP, vTPM, Secure Boot, LUKS2), every check on.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cvm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """cvm: build, boot, attack and verify confidential VMs with no SEV hardware."""


def _register() -> None:
    """The verb groups, in the order of the owner's and the relying party's flows."""
    from cvm.cli import (
        demo,
        disk,
        eventlog,
        gpt,
        luks,
        luks_tpm2,
        measure,
        pcr,
        pe,
        report,
        sb,
        tpm,
        varstore,
    )

    app.command(name="demo")(demo.demo)
    groups = (
        (measure.app, "measure"), (report.app, "report"), (luks.app, "luks"), (gpt.app, "gpt"),
        (disk.app, "disk"), (pe.app, "pe"), (sb.app, "sb"), (varstore.app, "varstore"),
        (eventlog.app, "eventlog"), (pcr.app, "pcr"), (tpm.app, "tpm"),
    )
    for group, name in groups:
        app.add_typer(group, name=name)
    luks_tpm2.register()  # cvm luks enroll-tpm2 / unlock-tpm2


_register()


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"cvm: error: {message}\n")
    return code


def execute(argv: list[str]) -> int:
    """Run the command line ``argv`` (without the program name); return the exit code."""
    debug = "--debug" in argv
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="cvm", standalone_mode=False)
    except typer.Exit as stop:
        return stop.exit_code
    except typer.Abort:
        return _fail("aborted", 130)
    except typer.TyperException as problem:
        if type(problem).__name__ == "NoArgsIsHelpError":
            typer.echo(problem.format_message())
            return 0
        if debug:
            traceback.print_exc()
        return _fail(problem.format_message(), UsageError.exit_code)
    except CvmError as error:
        if debug:
            traceback.print_exc()
        return _fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except OSError as error:
        if debug:
            traceback.print_exc()
        name = f" {error.filename}" if error.filename else ""
        return _fail(f"{error.strerror or error}{':' if name else ''}{name}", 74)
    except Exception as error:  # the last line of defence of the CLI
        if debug:
            traceback.print_exc()
        bug = InternalError(f"internal error ({type(error).__name__}: {error}); rerun with --debug")
        return _fail(str(bug), bug.exit_code)
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(execute(sys.argv[1:]))
