"""The GRUB script parser, word by word: quoting, variables, separators, comments, blocks,
``if``, and the line number of each refusal."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.guest.boot.grub_script import (
    Command,
    IfStatement,
    Word,
    has_quoted_part,
    literal_text,
    parse_script,
)


def _lit(text: str) -> Word:
    return Word(tuple(("lit", ch) for ch in text))


def _cmd(*words: Word, negate: bool = False, block: str | None = None) -> Command:
    return Command(tuple(words), negate, block)


def _words(text: str) -> tuple[Word, ...]:
    (command,) = parse_script(text)
    assert isinstance(command, Command)
    return command.words


def test_literal_and_quoted() -> None:
    assert literal_text((("lit", "a"), ("lit", "b"))) == "ab"
    assert literal_text(()) == ""
    assert literal_text((("lit", "a"), ("quoted", "b"))) is None
    assert literal_text((("var", "a"),)) is None
    assert has_quoted_part((("lit", "a"), ("quoted", ""))) is True
    assert has_quoted_part((("lit", "a"), ("var", "b"))) is False
    assert _lit("if").literal == "if" and not _lit("if").quoted
    assert Word((("quoted", ""),)).quoted and Word((("quoted", ""),)).literal is None


def test_words_are_split_by_blanks_and_continued_lines() -> None:
    assert _words("a  b\tc\r d \\\n e") == tuple(_lit(w) for w in "abcde")
    assert _words("a \\\nbc") == (_lit("a"), _lit("bc"))


def test_quotes_escapes_and_variables() -> None:
    assert _words("'a $b \"c' x") == (Word((("quoted", 'a $b "c'),)), _lit("x"))
    assert _words('"a $b ${c}d \\" \\$ \\\\ \\x"') == (Word((
        ("quoted", ""), ("quoted", "a"), ("quoted", " "), ("var", "b"), ("quoted", " "),
        ("var", "c"), ("quoted", "d"), ("quoted", " "), ("quoted", '"'), ("quoted", " "),
        ("quoted", "$"), ("quoted", " "), ("quoted", "\\"), ("quoted", " "), ("quoted", "\\"),
        ("quoted", "x"))),)
    assert _words('"a\\\nb"') == (Word((("quoted", ""), ("quoted", "a"), ("quoted", "b"))),)
    assert _words("\\;x\\ y") == (Word((("quoted", ";"), ("lit", "x"), ("quoted", " "),
                                         ("lit", "y"))),)
    assert _words("x} ${a}x${b}") == (_lit("x}"), Word((("var", "a"), ("lit", "x"),
                                                         ("var", "b"))))
    assert _words("$a_1$? $#x ${a b}c") == (
        Word((("var", "a_1"), ("var", "?"))), Word((("var", "#"), ("lit", "x"))),
        Word((("var", "a b"), ("lit", "c"))))
    # A lone dollar, or one before a character no name starts with, is literal.
    assert _words("$ $- a$") == (_lit("$"), _lit("$-"), _lit("a$"))
    assert _words('"$"') == (Word((("quoted", ""), ("quoted", "$"))),)
    assert _words('""') == (Word((("quoted", ""),)),)


def test_separators_and_comments() -> None:
    assert parse_script("a;b\n\nc ; ;d # e f\n#g\n  # h\ni#j") == (
        _cmd(_lit("a")), _cmd(_lit("b")), _cmd(_lit("c")), _cmd(_lit("d")), _cmd(_lit("i#j")))
    assert parse_script("echo a # c") == (_cmd(_lit("echo"), _lit("a")),)
    for comment in ("#", "#x", "#xy", "# x y z"):
        assert parse_script(f"a {comment}\nb {comment}\nc") == (
            _cmd(_lit("a")), _cmd(_lit("b")), _cmd(_lit("c"))), comment
        assert parse_script(f"{comment}\nb") == (_cmd(_lit("b")),), comment
    assert parse_script("") == ()
    assert parse_script(" \n;\n# only a comment") == ()


def test_negation_only_before_the_first_word() -> None:
    assert parse_script("! a !\n!") == (_cmd(_lit("a"), _lit("!"), negate=True),
                                        _cmd(negate=True))
    assert parse_script("'!' a") == (_cmd(Word((("quoted", "!"),)), _lit("a")),)


def test_blocks_keep_their_text_and_nest() -> None:
    script = "menuentry 'x' --id y {\n  if a; then { b }; fi\n  echo '}' \"{\"\n}\nnext"
    assert parse_script(script) == (
        _cmd(_lit("menuentry"), Word((("quoted", "x"),)), _lit("--id"), _lit("y"),
             block="\n  if a; then { b }; fi\n  echo '}' \"{\"\n"),
        _cmd(_lit("next")))
    assert parse_script("menuentry x { echo 'a}b' \"c}d\" }") == (
        _cmd(_lit("menuentry"), _lit("x"), block=" echo 'a}b' \"c}d\" "),)
    assert parse_script("function f {a}") == (_cmd(_lit("function"), _lit("f"), block="a"),)
    assert parse_script("submenu s {}") == (_cmd(_lit("submenu"), _lit("s"), block=""),)
    # Only block commands take a block; anywhere else "{" is a word.
    assert parse_script("echo {a}") == (_cmd(_lit("echo"), _lit("{a}")),)


def test_if_elif_else() -> None:
    a, b, c, d, e = (_cmd(_lit(x)) for x in "abcde")
    assert parse_script("if a; then b; elif c; then d; else e; fi") == (
        IfStatement(((( a,), (b,)), ((c,), (d,))), (e,)),)
    assert parse_script("if a\nthen\nb\nfi\nc") == (IfStatement((((a,), (b,)),), ()), c)
    assert parse_script("if a; then if b; then c; fi; fi") == (
        IfStatement((((a,), (IfStatement((((b,), (c,)),), ()),)),), ()),)
    # Keywords only count as the first word of a command.
    assert parse_script("echo if then fi") == (
        _cmd(_lit("echo"), _lit("if"), _lit("then"), _lit("fi")),)
    # A quoted keyword is a command name, not a keyword.
    assert parse_script("'fi'") == (_cmd(Word((("quoted", "fi"),))),)


@pytest.mark.parametrize(("script", "message"), [
    ("echo 'open", "GRUB script line 1: unterminated single quote"),
    ('a\necho "open', "GRUB script line 2: unterminated double quote"),
    ("a\n\necho ${open", "GRUB script line 3: unterminated ${"),
    ("menuentry x {\n echo", "GRUB script line 2: unterminated { block"),
    ("if a; then b", "GRUB script line 1: 'if' without 'fi'"),
    ("if a\n", "GRUB script line 2: 'if' without 'then'"),
    ("if a; then b; else c; elif d; fi", "GRUB script line 1: unexpected 'elif'"),
    ("a\nfi", "GRUB script line 2: unexpected 'fi'"),
    ("then x", "GRUB script line 1: unexpected 'then'"),
    ("\nfi\nx\n", "GRUB script line 2: unexpected 'fi'"),
    ("if a; then b\nfi\nfi\nx\ny", "GRUB script line 3: unexpected 'fi'"),
    ("else", "GRUB script line 1: unexpected 'else'"),
    ("elif", "GRUB script line 1: unexpected 'elif'"),
])
def test_refusals_name_the_line(script: str, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        parse_script(script)
    assert str(caught.value) == message
