"""The GRUB script language, as much as boot configurations use: words, quotes, variables,
``if/elif/else/fi``, ``!``, ``;`` and newlines, and ``menuentry``/``submenu``/``function``
blocks.

GRUB 2.06 manual section 6.3 "Shell-like scripting" and ``grub-core/script/yylex.l``,
``parser.y``: words are separated by blanks; ``'...'`` is literal, ``"..."`` expands ``$var`` and
``${var}`` and honours ``\\`` escapes; ``#`` starts a comment at the beginning of a word;
blocks keep their text verbatim (GRUB measures a ``menuentry`` command with the block text as
its last argument).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError

KEYWORDS = frozenset({"if", "then", "elif", "else", "fi"})
BLOCK_COMMANDS = frozenset({"menuentry", "submenu", "function"})
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
SPECIAL_VARIABLES = frozenset("?#@*")


@dataclass(frozen=True)
class Word:
    """One word: parts of kind ``lit`` (unquoted), ``quoted`` (literal) or ``var`` (name)."""

    parts: tuple[tuple[str, str], ...]

    @property
    def literal(self) -> str | None:
        """The text of a word made only of unquoted literal characters, else None."""
        return literal_text(self.parts)

    @property
    def quoted(self) -> bool:
        """Whether any part of the word was quoted (an empty quoted word still counts)."""
        return has_quoted_part(self.parts)


def literal_text(parts: tuple[tuple[str, str], ...]) -> str | None:
    """The text of parts all unquoted literal characters, else None (:attr:`Word.literal`)."""
    if all(kind == "lit" for kind, _ in parts):
        return "".join(text for _, text in parts)
    return None


def has_quoted_part(parts: tuple[tuple[str, str], ...]) -> bool:
    """Whether any of the parts was quoted (:attr:`Word.quoted`)."""
    return any(kind == "quoted" for kind, _ in parts)


@dataclass(frozen=True)
class Command:
    """A simple command (``negate`` for a leading ``!``), or a block command with its text."""

    words: tuple[Word, ...]
    negate: bool = False
    block: str | None = None


@dataclass(frozen=True)
class IfStatement:
    """``if`` with its ``elif`` branches (condition, body) and the ``else`` body."""

    branches: tuple[tuple[tuple[Statement, ...], tuple[Statement, ...]], ...]
    otherwise: tuple[Statement, ...]


Statement = Command | IfStatement


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> FormatError:
        line = self.text.count("\n", 0, self.pos) + 1
        return FormatError(f"GRUB script line {line}: {message}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_blanks(self) -> None:
        while True:
            ch = self.peek()
            if ch in (" ", "\t", "\r"):
                self.pos += 1
            elif ch == "\\" and self.text[self.pos + 1 : self.pos + 2] == "\n":
                self.pos += 2
            else:
                return

    def separator(self) -> None:
        """Consume separators: blanks, newlines, ';' and comments."""
        while True:
            self.skip_blanks()
            ch = self.peek()
            if ch in ("\n", ";"):
                self.pos += 1
            elif ch == "#":
                while self.peek() not in ("", "\n"):
                    self.pos += 1
            else:
                return

    def starts_variable(self) -> bool:
        ch = self.peek()  # "" at the end: in neither set
        return ch == "{" or ch in NAME_CHARS or ch in SPECIAL_VARIABLES

    def variable(self) -> str:
        if self.peek() == "{":
            end = self.text.find("}", self.pos)
            if end < 0:
                raise self.fail("unterminated ${")
            name = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return name
        start = self.pos
        if self.peek() in SPECIAL_VARIABLES:
            self.pos += 1
        else:
            while self.peek() and self.peek() in NAME_CHARS:
                self.pos += 1
        return self.text[start : self.pos]

    def word(self) -> Word | None:
        parts: list[tuple[str, str]] = []
        while True:
            ch = self.peek()
            if ch in ("", " ", "\t", "\r", "\n", ";"):
                break
            self.pos += 1
            if ch == "\\":
                parts.append(("quoted", self.peek()))
                self.pos += 1
            elif ch == "'":
                end = self.text.find("'", self.pos)
                if end < 0:
                    raise self.fail("unterminated single quote")
                parts.append(("quoted", self.text[self.pos : end]))
                self.pos = end + 1
            elif ch == '"':
                parts.extend(self.double_quoted())
            elif ch == "$" and self.starts_variable():
                parts.append(("var", self.variable()))
            else:
                parts.append(("lit", ch))
        return Word(tuple(parts)) if parts else None

    def double_quoted(self) -> list[tuple[str, str]]:
        parts: list[tuple[str, str]] = [("quoted", "")]
        while True:
            ch = self.peek()
            if ch == "":
                raise self.fail("unterminated double quote")
            self.pos += 1
            if ch == '"':
                return parts
            if ch == "\\" and self.peek() in ('"', "$", "\\", "\n"):
                escaped = self.peek()
                self.pos += 1
                if escaped != "\n":
                    parts.append(("quoted", escaped))
            elif ch == "$" and self.starts_variable():
                parts.append(("var", self.variable()))
            else:
                parts.append(("quoted", ch))

    def block(self) -> str:
        """The text between ``{`` (already current) and its matching ``}``."""
        depth = 0
        start = self.pos + 1
        quote = ""
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in ("'", '"'):
                quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    self.pos += 1
                    return self.text[start : self.pos - 1]
            self.pos += 1
        raise self.fail("unterminated { block")


def parse_script(text: str) -> tuple[Statement, ...]:
    """Parse a GRUB script into statements; FormatError for unbalanced syntax."""
    statements, _ = _parse_list(_Lexer(text), frozenset())  # a stray keyword fails inside
    return statements


def _parse_list(lexer: _Lexer, stops: frozenset[str]) -> tuple[tuple[Statement, ...], str | None]:
    statements: list[Statement] = []
    while True:
        lexer.separator()
        if lexer.peek() == "":
            return tuple(statements), None
        start = lexer.pos
        first = lexer.word()
        keyword = first.literal if first is not None else None
        if keyword in stops:
            return tuple(statements), keyword
        if keyword == "if":
            statements.append(_parse_if(lexer))
            continue
        if keyword in KEYWORDS:
            raise lexer.fail(f"unexpected {keyword!r}")
        lexer.pos = start
        statements.append(_parse_command(lexer))


def _parse_if(lexer: _Lexer) -> IfStatement:
    branches = []
    while True:
        condition, end = _parse_list(lexer, frozenset({"then"}))
        if end != "then":
            raise lexer.fail("'if' without 'then'")
        body, end = _parse_list(lexer, frozenset({"elif", "else", "fi"}))
        branches.append((condition, body))
        if end == "elif":
            continue
        otherwise: tuple[Statement, ...] = ()
        if end == "else":
            otherwise, end = _parse_list(lexer, frozenset({"fi"}))
        if end != "fi":
            raise lexer.fail("'if' without 'fi'")
        return IfStatement(tuple(branches), otherwise)


def _parse_command(lexer: _Lexer) -> Command:
    words: list[Word] = []
    negate = False
    while True:
        lexer.skip_blanks()
        ch = lexer.peek()
        if ch == "#":  # the comment itself is skipped as a separator
            break
        if ch == "{" and words and words[0].literal in BLOCK_COMMANDS:
            return Command(tuple(words), negate, lexer.block())
        word = lexer.word()
        if word is None:  # the end, a newline or ';'
            break
        if not words and not negate and word.literal == "!":
            negate = True
            continue
        words.append(word)
    return Command(tuple(words), negate)
