"""Entry point of the ``cvm`` command: the verb groups and the one error handler.

Every project error becomes one line on stderr and the exit code its class documents in
:mod:`cvm.errors`; ``--debug`` (anywhere on the command line) shows the traceback instead.
An interrupt (Ctrl-C, SIGINT) while a command runs is exit 130 without a line: typer turns the
``KeyboardInterrupt`` into that exit itself; one during a prompt is "aborted", 130 as well.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import typer
import typer.core
from typer._click.core import Command, Context  # the click that typer ships
from typer._click.formatting import HelpFormatter
from typer.core import TyperGroup

from cvm import __version__
from cvm.errors import CvmError, InternalError, UsageError

# typer escapes "[required]" for rich's HTML export even when help is plain text: cvm prints
# plain help (rich_markup_mode=None), so tell typer not to prepare text for rich.
typer.core.HAS_RICH = False

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a check ran and said no; 2 wrong key or passphrase; "
    "64 usage; 65 malformed input; 66 not authentic; 67 refused by policy; "
    "68 firmware/TPM status; 69 wrong lifecycle state; 70 external tool; 71 internal bug; "
    "74 a file could not be read or written; 130 interrupted (Ctrl-C)."
)

# name -> (module, attribute, one-line help). A command's module is imported only when that
# command runs (or its own --help is asked for), so ``cvm --help`` stays fast.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("cvm.cli.demo", "demo", "The main job: build, launch, attack and verify; a report."),
    "measure": ("cvm.cli.measure", "measure", "The launch digest, equal to sev-snp-measure's."),
    "report": ("cvm.cli.report", "app", "Show and verify SEV-SNP attestation reports."),
    "luks": ("cvm.cli.luks_tpm2", "luks_group", "LUKS2 volumes as cryptsetup writes them."),
    "gpt": ("cvm.cli.gpt", "app", "GUID partition tables."),
    "disk": ("cvm.cli.disk", "app", "Disk images: clear ESP, pre-encrypted LUKS2 root."),
    "pe": ("cvm.cli.pe", "app", "PE/COFF images: Authenticode hash, sections, signatures."),
    "sb": ("cvm.cli.sb", "app", "Secure Boot: sign PE images, verify them against db/dbx."),
    "varstore": ("cvm.cli.varstore", "app", "OVMF varstores: Secure Boot keys, enrollment."),
    "eventlog": ("cvm.cli.eventlog", "app", "Show and replay TCG event logs."),
    "pcr": ("cvm.cli.pcr", "app", "Predict PCR values of a boot chain."),
    "tpm": ("cvm.cli.tpm", "app", "The vTPM: policies, seal/unseal, inspect, serve."),
    "image": ("cvm.cli.image", "app", "The owner's image: build a confidential VM bundle."),
    "attack": ("cvm.cli.attack", "app", "The host's attacks: list, run one, the whole matrix."),
    "vm": ("cvm.cli.vm", "app", "Run an image as a VM: boot, unseal, workload, trace."),
    "attest": ("cvm.cli.attest", "app", "Attestation: evidence, appraisal (dry run), fetch."),
    "kbs": ("cvm.cli.kbs", "app", "The key broker service (Trustee's RCAR protocol)."),
}


# typer's own placeholder of an option's value -> the one cvm's help shows
PLACEHOLDERS = {"<path>": "PATH", "<int>": "N", "<str>": "TEXT", "<float>": "NUMBER"}


def _name_placeholders(command: Command, ctx: Context) -> None:
    """Give every option value and argument a placeholder a user reads (``PATH``, ``N``), in
    ``command`` and every command under it.

    Left alone, typer prints the value's type in angle brackets (``<path>``) and a required
    argument in braces (``{path}``); an argument is shown by its metavar or its name in upper
    case, ``...`` after it when repeated, in brackets in the usage line when optional.
    """
    for param in command.params:
        if param.param_type_name == "argument":
            name = (param.metavar or str(param.name)).upper().removeprefix("[").removesuffix("]")
            name = name if param.nargs == 1 else f"{name}..."
            shown = name if param.required else f"[{name}]"
            vars(param)["make_metavar"] = lambda ctx=None, usage=False, n=name, s=shown: (
                s if usage else n
            )
        elif param.metavar is None and (placeholder := PLACEHOLDERS.get(param.make_metavar(ctx))):
            param.metavar = placeholder
    for sub in getattr(command, "commands", {}).values():
        _name_placeholders(sub, ctx)


class LazyGroup(TyperGroup):
    """The root group: commands listed from :data:`COMMANDS`, each imported on first use."""

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, attribute, _ = COMMANDS[cmd_name]
        target = getattr(importlib.import_module(module_name), attribute)
        wrapper = typer.Typer(add_completion=False, rich_markup_mode=None)
        if isinstance(target, typer.Typer):
            wrapper.add_typer(target, name=cmd_name)
        else:
            wrapper.command(name=cmd_name)(target)

        @wrapper.callback()
        def _group() -> None:
            """Keeps the wrapper a group, so the command keeps its name."""

        group = typer.main.get_command(wrapper)
        assert isinstance(group, TyperGroup)
        command = group.get_command(ctx, cmd_name)
        if command is not None:
            _name_placeholders(command, ctx)
        return command

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        rows = [(name, entry[2]) for name, entry in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    name="cvm",
    cls=LazyGroup,
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


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"cvm: error: {message}\n")
    return code


def execute(argv: list[str]) -> int:
    """Run the command line ``argv`` (without the program name); return the exit code."""
    debug = "--debug" in argv
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="cvm", standalone_mode=False)
    except typer.Abort:  # a prompt interrupted or given no input
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
