"""The GRUB stage: run the configuration, measure commands (PCR 8) and files (PCR 9), load Linux.

GRUB 2.06 as Debian builds it: ``grub-core/commands/tpm.c`` measures every command line the
script engine executes (after expansion, arguments joined by one space) into PCR 8 as EV_IPL
with event ``"grub_cmd: " + command + NUL`` and digest H(command), the kernel command line as
``"kernel_cmdline: " + path and arguments``, and every file it reads through the verifiers
(configuration files, kernel, initrd) into PCR 9 as EV_IPL with event ``path + NUL`` and digest
H(file). Files of the embedded memdisk are part of the signed image and are not measured. The
kernel is checked through shim's shim_lock protocol and loaded through shim's LoadImage hook,
each of which measures it into PCR 4; a GRUB started without shim hands the kernel to the
firmware's LoadImage (GRUB 2.12 ``linux`` on UEFI), which verifies it against db/dbx and
measures it into PCR 4 (and its authority into PCR 7). A menu entry runs as
``setparams TITLE`` followed by its body and boots without an explicit ``boot`` command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cvm.errors import StateError
from cvm.formats.grub.core_image import GrubCoreImage
from cvm.formats.tcg.event_type import EventType
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import Firmware
from cvm.guest.boot.grub_script import Command, IfStatement, Statement, Word, parse_script
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.shim import Shim

GRUB_STRING_PCR = 8
GRUB_BINARY_PCR = 9
NO_OP_COMMANDS = frozenset({
    "insmod", "echo", "terminal_input", "terminal_output", "load_video", "gfxmode", "export",
    "recordfail", "save_env", "load_env", "true", "sleep", "serial", "terminal", "font",
    "loadfont", "background_image", "set_background_color", "play", "initrdfail",
})
MAX_DEPTH = 16
PathCheck = Callable[[str], bool]


@dataclass(frozen=True)
class BootRequest:
    """What GRUB hands to the kernel: the image, its command line and the initrd."""

    kernel: bytes
    kernel_path: str
    cmdline: str
    initrd: bytes


class _Booted(Exception):  # noqa: N818 - control flow, never escapes this module
    def __init__(self, request: BootRequest) -> None:
        super().__init__("boot")
        self.request = request


@dataclass
class _State:
    env: dict[str, str]
    menu: list[tuple[str, str]] = field(default_factory=list)
    kernel: tuple[str, bytes, str] | None = None
    initrd: bytes = b""
    depth: int = 0


class Grub:
    """GRUB loaded by shim from the ESP of disk ``hd0``, partition ``partition``."""

    def __init__(
        self, boot: MeasuredBoot, esp: EspFiles, core: GrubCoreImage, image_path: str,
        shim: Shim | None = None, partition: int = 1, firmware: Firmware | None = None,
    ) -> None:
        self.boot = boot
        self.esp = esp
        self.core = core
        self.shim = shim
        self.firmware = firmware
        self.device = f"hd0,gpt{partition}"
        directory = "/" + image_path.replace("\\", "/").strip("/").rsplit("/", 1)[0]
        prefix = core.prefix or "/boot/grub"
        if not prefix.startswith("("):
            prefix = f"({self.device}){prefix}"
        self.state = _State({
            "root": self.device, "prefix": prefix, "cmdpath": f"({self.device}){directory}",
            "grub_platform": "efi", "grub_cpu": "x86_64", "?": "0",
        })

    # --- measurement --------------------------------------------------------------------

    def measure_string(self, prefix: str, text: str) -> None:
        data = text.encode("utf-8")
        self.boot.measure(GRUB_STRING_PCR, EventType.EV_IPL,
                          prefix.encode("ascii") + data + b"\0", hashed=data)

    def read_file(self, path: str, measure: bool = True) -> bytes | None:
        """A file by GRUB path (``(dev)/path`` or ``/path`` on $root), measured into PCR 9."""
        if path.startswith("(memdisk)"):
            return self.core.memdisk_file(path[len("(memdisk)") :])
        local = self._local(path)
        if local is None or local not in self.esp:
            return None
        data = self.esp[local]
        if measure:
            self.boot.measure(GRUB_BINARY_PCR, EventType.EV_IPL,
                              path.encode("utf-8") + b"\0", hashed=data)
        return data

    def _local(self, path: str) -> str | None:
        device = self.state.env.get("root", self.device)
        if path.startswith("("):
            end = path.find(")")
            if end < 0:
                return None
            device, path = path[1:end], path[end + 1 :]
        if device != self.device:
            return None
        return path or "/"

    def _exists(self, path: str) -> bool:
        if path.startswith("(memdisk)"):
            return self.core.memdisk_file(path[len("(memdisk)") :]) is not None
        local = self._local(path)
        return local is not None and (local in self.esp or self.esp.is_directory(local))

    # --- the run ------------------------------------------------------------------------

    def run(self) -> BootRequest:
        """Execute the embedded configuration (then the menu's default entry) until boot."""
        try:
            for line in self.core.config.splitlines():
                words = line.split()
                if len(words) == 2 and words[0] in ("normal", "configfile"):
                    self._source(words[1], measure=False)
                elif len(words) == 2 and words[0] == "set" and "=" in words[1]:
                    name, _, value = words[1].partition("=")
                    self.state.env[name] = value
            if not self.core.config.strip():
                self._source(self.state.env["prefix"] + "/grub.cfg", measure=True)
            self._run_default_entry()
        except _Booted as booted:
            return booted.request
        raise StateError("GRUB: the configuration did not boot a kernel")

    def _run_default_entry(self) -> None:
        if not self.state.menu:
            return
        default = self.state.env.get("default", "0")
        titles = [title for title, _ in self.state.menu]
        index = int(default) if default.isdigit() else (
            titles.index(default) if default in titles else 0)
        title, body = self.state.menu[min(index, len(self.state.menu) - 1)]
        self._command(["setparams", title])
        self._execute(parse_script(body))
        if self.state.kernel is not None:
            self._boot()

    def _source(self, path: str, measure: bool = True) -> bool:
        data = self.read_file(path, measure)
        if data is None:
            return False
        if self.state.depth >= MAX_DEPTH:
            raise StateError(f"GRUB: configuration files nested deeper than {MAX_DEPTH}")
        self.state.depth += 1
        try:
            self._execute(parse_script(data.decode("utf-8", "replace")))
        finally:
            self.state.depth -= 1
        return True

    def _execute(self, statements: tuple[Statement, ...]) -> bool:
        status = True
        for statement in statements:
            if isinstance(statement, IfStatement):
                status = self._execute_if(statement)
            else:
                status = self._execute_command(statement)
            self.state.env["?"] = "0" if status else "1"
        return status

    def _execute_if(self, statement: IfStatement) -> bool:
        for condition, body in statement.branches:
            if self._execute(condition):
                return self._execute(body)
        return self._execute(statement.otherwise) if statement.otherwise else True

    def _expand(self, word: Word) -> str | None:
        text = "".join(
            self.state.env.get(value, "") if kind == "var" else value for kind, value in word.parts
        )
        return None if text == "" and not word.quoted else text

    def _execute_command(self, command: Command) -> bool:
        args = [a for a in (self._expand(w) for w in command.words) if a is not None]
        if command.block is not None:
            args.append("{" + command.block + "}")
        if not args:
            return True
        status = self._command(args)
        return not status if command.negate else status

    def _command(self, args: list[str]) -> bool:
        self.measure_string("grub_cmd: ", " ".join(args))
        name, rest = args[0], args[1:]
        handler = {
            "set": self._set, "unset": self._unset, "[": self._test, "test": self._test,
            "source": self._source_command, ".": self._source_command,
            "configfile": self._source_command, "search": self._search,
            "search.file": self._search_file, "linux": self._linux, "linuxefi": self._linux,
            "initrd": self._initrd, "initrdefi": self._initrd, "boot": self._boot_command,
            "menuentry": self._menuentry, "submenu": self._menuentry,
            "setparams": self._setparams,
        }.get(name)  # "false", like every command not known here, fails
        if handler is not None:
            return handler(rest)
        if name in NO_OP_COMMANDS:
            return True
        if "=" in name and not rest:
            variable, _, value = name.partition("=")
            self.state.env[variable] = value
            return True
        return False

    # --- commands -----------------------------------------------------------------------

    def _set(self, args: list[str]) -> bool:
        for arg in args:
            name, _, value = arg.partition("=")
            self.state.env[name] = value
        return True

    def _unset(self, args: list[str]) -> bool:
        for name in args:
            self.state.env.pop(name, None)
        return True

    def _setparams(self, args: list[str]) -> bool:
        for number, value in enumerate(args, start=1):
            self.state.env[str(number)] = value
        return True

    def _test(self, args: list[str]) -> bool:
        if args and args[-1] == "]":
            args = args[:-1]
        return _evaluate(args, self._exists, self._is_file)

    def _is_file(self, path: str) -> bool:
        local = self._local(path)
        return local is not None and local in self.esp

    def _source_command(self, args: list[str]) -> bool:
        return bool(args) and self._source(args[0])

    def _search(self, args: list[str]) -> bool:
        target = "root"
        names = []
        by_file = False
        for arg in args:
            if arg.startswith("--set"):
                target = arg.partition("=")[2] or "root"
            elif arg in ("--file", "-f"):
                by_file = True
            elif not arg.startswith("-"):
                names.append(arg)
        return by_file and self._set_if_found(names, target)

    def _search_file(self, args: list[str]) -> bool:
        paths = [a for a in args if not a.startswith("-")]
        target = next((a.partition("=")[2] for a in args if a.startswith("--set")), "") or "root"
        return self._set_if_found(paths, target)

    def _set_if_found(self, paths: list[str], target: str) -> bool:
        """``search``'s effect: when the first file exists, ``target`` names this device."""
        if paths and paths[0] in self.esp:
            self.state.env[target] = self.device
            return True
        return False

    def _linux(self, args: list[str]) -> bool:
        if not args:
            return False
        kernel = self.read_file(args[0])
        if kernel is None:
            raise StateError(f"GRUB: kernel {args[0]} not found")
        if self.shim is not None:
            self.shim.verify(kernel, args[0])
            self.shim.load_image(kernel, args[0])
        elif self.firmware is not None:
            self.firmware.load_buffer(kernel, args[0])
        self.measure_string("kernel_cmdline: ", " ".join(args))
        self.state.kernel = (args[0], kernel, " ".join(["BOOT_IMAGE=" + args[0], *args[1:]]))
        self.state.initrd = b""
        return True

    def _initrd(self, args: list[str]) -> bool:
        if self.state.kernel is None:
            raise StateError("GRUB: 'initrd' before 'linux'")
        parts = []
        for path in args:
            data = self.read_file(path)
            if data is None:
                raise StateError(f"GRUB: initrd {path} not found")
            parts.append(data)
        self.state.initrd = b"".join(parts)
        return True

    def _boot_command(self, args: list[str]) -> bool:
        self._boot()
        return True

    def _boot(self) -> None:
        if self.state.kernel is None:
            raise StateError("GRUB: 'boot' without a loaded kernel")
        path, kernel, cmdline = self.state.kernel
        raise _Booted(BootRequest(kernel, path, cmdline, self.state.initrd))

    def _menuentry(self, args: list[str]) -> bool:
        if not args or not args[-1].startswith("{"):
            return False
        self.state.menu.append((args[0], args[-1][1:-1]))
        return True


def _evaluate(args: list[str], exists: PathCheck, is_file: PathCheck) -> bool:
    """GRUB's ``test``: ``-o`` binds weakest, then ``-a``, then ``!`` and the primaries."""
    if "-o" in args:
        i = args.index("-o")
        return _evaluate(args[:i], exists, is_file) or _evaluate(args[i + 1 :], exists, is_file)
    if "-a" in args:
        i = args.index("-a")
        return _evaluate(args[:i], exists, is_file) and _evaluate(args[i + 1 :], exists, is_file)
    if args and args[0] == "!":
        return not _evaluate(args[1:], exists, is_file)
    if len(args) == 3 and args[1] in ("=", "==", "!="):
        return (args[0] == args[2]) == (args[1] != "!=")
    if len(args) == 2:
        operator, operand = args
        checks = {
            "-z": lambda: operand == "", "-n": lambda: operand != "",
            "-e": lambda: exists(operand), "-d": lambda: exists(operand),
            "-f": lambda: is_file(operand), "-s": lambda: is_file(operand),
        }
        if operator in checks:
            return checks[operator]()
    if len(args) == 1:
        return args[0] != ""
    return False
