"""The demo's HTML report, read back as a browser would: the overall verdict first, the run's seed
and cvm's version, the chain of trust, the pictures, and per attack and mode the expected outcome
beside the observed one — green where the cell held, red where it broke, grey where the attack
does not apply — with every word of what was observed (nothing cut)."""

from __future__ import annotations

import base64
import html
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser

from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import Leak
from cvm.host.adversary.threat import (
    Attack,
    Family,
    Mechanism,
    Observed,
    blocked,
    by,
    declare,
    na,
    not_applicable,
    ok,
    succeeded,
)
from cvm.scenarios.attack_matrix import Result
from cvm.scenarios.report import STYLE, Panel, Step, demo_report

LONG_DETAIL = ("the RMP refused the host's write to the guest's page at 0x4000: " + "word " * 80
               + "end of the detail")


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""
    own_text: str = ""
    children: list[Element] = field(default_factory=list)

    def find(self, tag: str) -> list[Element]:
        found = [self] if self.tag == tag else []
        for child in self.children:
            found += child.find(tag)
        return found

    @property
    def css(self) -> str:
        return self.attrs.get("class", "")


class Page(HTMLParser):
    """The page as a tree of elements (void elements have no children)."""

    VOID = frozenset({"meta", "br", "img"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("root", {})
        self.stack = [self.root]
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, (self.stack[-1].tag, tag)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for element in self.stack[1:]:
            element.text += data
        self.stack[-1].own_text += data

    def elements(self) -> list[Element]:
        found, todo = [], [self.root]
        while todo:
            element = todo.pop()
            found.append(element)
            todo.extend(element.children)
        return found


def _attack(name: str, family: Family, does: str, expected: tuple[object, ...]) -> Attack:
    def perform(lab: object) -> Observed:
        raise AssertionError("not run")

    return declare(name, family, does, expected, perform)  # type: ignore[arg-type]


READ = _attack("read-page", Family.MEMORY, "read <a> private page & tell",
               (ok("no encryption"), by(Mechanism.MEMORY_ENCRYPTION),
                by(Mechanism.MEMORY_ENCRYPTION), by(Mechanism.RMP)))
UNASSIGN = _attack("unassign-page", Family.MEMORY, "RMPUPDATE a page back",
                   (na("no RMP"), na("no RMP"), na("no RMP"), by(Mechanism.RMP)))


def _results() -> list[Result]:
    """Six cells: held, broken by its verdict, held although it leaked (need not be clean),
    broken by a leak where the mode must be clean, not applicable, and a missing cell."""
    leak = Leak("volume key", 0, "DRAM", 0x1000)
    return [
        Result(READ, Mode.PLAIN, succeeded("read the page"), (), False, 0.1),
        Result(READ, Mode.SEV, succeeded("read the plaintext"), (), False, 0.1),
        Result(READ, Mode.SEV_ES, blocked(Mechanism.MEMORY_ENCRYPTION, "ciphertext"),
               (leak, Leak("workload data", 8, "disk", 0), leak), False, 0.1),
        Result(READ, Mode.SEV_SNP, blocked(Mechanism.RMP, LONG_DETAIL), (leak,), True, 0.1),
        Result(UNASSIGN, Mode.PLAIN, not_applicable("no RMP in plain"), (), False, 0.1),
        Result(UNASSIGN, Mode.SEV_SNP, blocked(Mechanism.RMP, "RMPUPDATE refused"), (), True,
               0.1),
    ]


STEPS: Sequence[Step] = (
    ("firmware", "verified", "shimx64.efi <signed> & measured", "4", "ab" * 32),
    ("shim", "measured", "grub.cfg", "", "cd" * 32),
)


def _page(*, held: bool = True, seed: int | None = 7, results: Sequence[Result] | None = None,
          panels: Sequence[Panel] = ()) -> Page:
    return Page(demo_report(verdict="HELD: 5/6 <cells>", held=held, seed=seed,
                            version="9.8.7", steps=STEPS, outcome="OK: every stage verified",
                            panels=panels, results=_results() if results is None else results))


def _matrix_rows(page: Page) -> list[list[Element]]:
    table = page.root.find("table")[-1]
    return [row.find("td") + row.find("th") for row in table.find("tr")]


def _cells(page: Page, attack: str) -> dict[str, tuple[Element, Element]]:
    """(expected, observed) cells of one attack's row, by the mode of the header above them."""
    rows = _matrix_rows(page)
    modes = [th.text for th in rows[0] if th.attrs.get("colspan") == "2"]
    for row in rows[2:]:
        if row[0].text == attack:
            cells = row[3:]
            assert len(cells) == 2 * len(modes)
            return {mode: (cells[2 * i], cells[2 * i + 1]) for i, mode in enumerate(modes)}
    raise AssertionError(f"no row for {attack}")


def _colour(css_class: str) -> tuple[int, int, int]:
    match = re.search(rf"\.{css_class}\{{background:#([0-9a-f]{{3}})\}}", STYLE)
    assert match is not None, css_class
    return tuple(int(digit * 2, 16) for digit in match.group(1))  # type: ignore[return-value]


def test_the_overall_verdict_comes_first_coloured_by_whether_every_cell_held() -> None:
    for held, css in ((True, "held"), (False, "broken")):
        page = _page(held=held)
        paragraphs = page.root.find("p")
        assert paragraphs[0].css == f"verdict {css}"
        assert paragraphs[0].text == "HELD: 5/6 <cells>"
        first_table = page.root.find("table")[0]
        text = "".join(e.text for e in page.root.children if e.tag in ("h1", "p", "style"))
        assert text.index("HELD: 5/6") < text.index("9.8.7")
        assert first_table is not None


def test_held_is_green_broken_red_not_applicable_grey() -> None:
    red, green, blue = _colour("held")
    assert green > red and green > blue  # green
    red, green, blue = _colour("broken")
    assert red > green and red > blue  # red
    red, green, blue = _colour("na")
    assert red == green == blue  # grey
    assert _colour("held") != _colour("na")


def test_the_seed_the_version_and_the_number_of_cells_are_shown() -> None:
    assert "cvm 9.8.7 · seed 7 · 6 attack cells" in [p.text for p in _page().root.find("p")]
    assert "cvm 9.8.7 · seed 0 · 6 attack cells" in [p.text for p in
                                                    _page(seed=0).root.find("p")]
    unseeded = [p.text for p in _page(seed=None).root.find("p")]
    assert "cvm 9.8.7 · seed none (random) · 6 attack cells" in unseeded


def test_each_mode_has_an_expected_and_an_observed_column_side_by_side() -> None:
    rows = _matrix_rows(_page())
    header = [(th.text, th.attrs) for th in rows[0]]
    assert header[:3] == [("attack", {"rowspan": "2"}), ("family", {"rowspan": "2"}),
                          ("what the host does", {"rowspan": "2"})]
    assert header[3:] == [(mode.value, {"colspan": "2"}) for mode in
                          (Mode.PLAIN, Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP)]
    assert [th.text for th in rows[1]] == ["expected", "observed"] * 4
    first = rows[2]
    assert [td.text for td in first[:3]] == ["read-page", "memory",
                                             "read <a> private page & tell"]
    assert first[0].find("b")[0].text == "read-page"


def test_the_modes_are_the_columns_in_the_order_the_results_give_them() -> None:
    results = [r for r in _results() if r.attack is READ][::-1]
    rows = _matrix_rows(_page(results=results))
    assert [th.text for th in rows[0][3:]] == ["sev-snp", "sev-es", "sev", "plain"]
    assert len(rows) == 3  # one attack row


def test_expected_and_observed_in_full_with_the_cell_colour() -> None:
    cells = _cells(_page(), "read-page")
    expected, observed = cells["plain"]
    assert expected.text == "succeeded" + "no encryption"
    assert expected.find("small")[0].text == "no encryption"
    assert observed.css == "held"
    assert observed.find("b")[0].text == "succeeded"
    assert observed.find("small")[0].text == "read the page"
    expected, observed = cells["sev"]
    assert expected.text == "blocked by memory encryption (per-VM key)"
    assert observed.css == "broken"  # succeeded where it had to be blocked
    assert observed.find("b")[0].text == "succeeded"
    expected, observed = cells["sev-snp"]
    assert expected.text == "blocked by RMP"
    assert observed.find("b")[0].text == "blocked by RMP"
    assert observed.find("small")[0].text == LONG_DETAIL  # every word, nothing cut


def test_an_expectation_without_a_reason_shows_none() -> None:
    expected, _ = _cells(_page(), "read-page")["sev"]
    assert expected.find("small") == [] and expected.find("br") == []


def test_a_leak_is_shown_and_breaks_the_cell_only_where_the_mode_must_be_clean() -> None:
    cells = _cells(_page(), "read-page")
    _, observed = cells["sev-es"]  # leaked, expected verdict, need not be clean
    assert observed.css == "held"
    scan = observed.find("small")[1].text
    assert scan == "canary scan: 3 hit(s) of volume key, workload data"
    _, observed = cells["sev-snp"]
    assert observed.css == "broken"
    assert observed.find("small")[1].text == ("canary scan: 1 hit(s) of volume key — must be "
                                              "clean here")
    _, observed = cells["plain"]
    assert len(observed.find("small")) == 1  # no scan line where nothing leaked
    assert observed.text == "succeeded" + "read the page"


def test_not_applicable_is_grey_and_a_missing_cell_is_empty() -> None:
    cells = _cells(_page(), "unassign-page")
    expected, observed = cells["plain"]
    assert observed.css == "na" and observed.find("b")[0].text == "not applicable"
    assert expected.find("small")[0].text == "no RMP"
    for mode in ("sev", "sev-es"):
        expected, observed = cells[mode]
        assert (expected.text, observed.text, expected.attrs, observed.attrs) == ("", "", {}, {})
    assert cells["sev-snp"][1].css == "held"
    broken = Result(UNASSIGN, Mode.SEV_SNP, not_applicable("no RMP?"), (), True, 0.1)
    observed = _cells(_page(results=[broken]), "unassign-page")["sev-snp"][1]
    assert observed.css == "broken"  # not applicable where it had to be blocked: red, not grey


def test_the_text_is_escaped() -> None:
    page = demo_report(verdict="<script>", held=True, seed=None, version="<v>", steps=STEPS,
                       outcome="a<b", panels=[Panel("<cap>", bytes(4096), bytes(4096), "n<o")],
                       results=_results())
    for raw in ("<script>", "<v>", "<a>", "<signed>", "a<b", "<cap>", "n<o", "<cells>"):
        assert raw not in page
    assert "&lt;script&gt;" in page and "read &lt;a&gt; private page &amp; tell" in page


def test_the_chain_of_trust_in_full() -> None:
    page = _page()
    table = page.root.find("table")[0]
    rows = table.find("tr")
    assert [th.text for th in rows[0].find("th")] == ["who", "did", "what", "PCR", "SHA-256"]
    assert [[td.text for td in row.find("td")] for row in rows[1:]] == [list(s) for s in STEPS]
    assert rows[1].find("td")[4].find("small")[0].text == "ab" * 32
    outcome = [p for p in page.root.find("p") if p.find("b")]
    assert outcome[0].find("b")[0].text == "OK: every stage verified"


def _png_pixels(png: bytes) -> tuple[int, int, bytes]:
    width, height = struct.unpack(">II", png[16:24])
    body = b""
    at = 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        if png[at + 4 : at + 8] == b"IDAT":
            body += png[at + 8 : at + 8 + length]
        at += 12 + length
    return width, height, zlib.decompress(body)


def test_each_panel_shows_the_guest_and_the_host_picture_of_its_page() -> None:
    guest = bytes(range(256)) * 16
    host = bytes(255 - (i % 256) for i in range(4096))
    page = _page(panels=[Panel("sev (ASID 2)", guest, host, "ciphertext")])
    figures = page.root.find("figure")
    assert [f.find("figcaption")[0].text for f in figures] == ["guest reads", "host reads"]
    for figure, pixels in zip(figures, (guest, host), strict=True):
        image = figure.find("img")[0]
        assert image.attrs["alt"] == figure.find("figcaption")[0].text
        src = image.attrs["src"]
        assert src.startswith("data:image/png;base64,")
        width, height, raw = _png_pixels(base64.b64decode(src.split(",", 1)[1]))
        assert (width, height) == (256, 256)  # 64 × 64 pixels, 4× larger
        assert raw[1 : 1 + 256 : 4] == pixels[:64]
    assert [h.text for h in page.root.find("h3")] == ["sev (ASID 2)"]
    assert "ciphertext" in [p.text for p in page.root.find("p")]


def test_sections_come_in_order() -> None:
    page = _page(panels=[Panel("plain", bytes(4096), bytes(4096), "clear")])
    headings = [h.text for h in page.root.find("h1") + page.root.find("h2")]
    assert headings == ["cvm demo", "The chain of trust of the SEV-SNP boot",
                        "One secret page, as the guest and as the host read it",
                        "The host's attacks, every mode, measured live"]
    text = str(demo_report(verdict="v", held=True, seed=1, version="1", steps=STEPS,
                           outcome="o", panels=[Panel("plain", bytes(4096), bytes(4096), "c")],
                           results=_results()))
    assert text.startswith("<!doctype html><meta charset='utf-8'><title>cvm demo</title>")
    assert text.index("who</th>") < text.index("guest reads") < text.index("expected</th>")


def test_no_cell_is_cut_short() -> None:
    """The style lets every cell wrap and grow: nothing hidden, clipped or ended with an
    ellipsis, so what was observed is read in full."""
    for cutting in ("overflow", "text-overflow", "ellipsis", "nowrap", "max-height", "clip",
                    "line-clamp"):
        assert cutting not in STYLE, cutting
    cell_rule = re.search(r"td,th\{([^}]*)\}", STYLE)
    assert cell_rule is not None and "white-space:normal" in cell_rule.group(1)
    assert "width" not in cell_rule.group(1)
    page = demo_report(verdict="v", held=False, seed=1, version="1", steps=STEPS, outcome="o",
                       panels=[], results=_results())
    assert html.escape(LONG_DETAIL) in page and "…" not in page


def test_no_stray_text_outside_the_cells_and_paragraphs() -> None:
    """Text lives in headings, paragraphs, cells and captions; between the tags of the page,
    its tables, rows and figures there is none."""
    page = _page(panels=[Panel("plain", bytes(4096), bytes(4096), "clear")])
    containers = [e for e in page.elements() if e.tag in ("root", "table", "tr", "div",
                                                          "figure")]
    assert {e.tag for e in containers} == {"root", "table", "tr", "div", "figure"}
    for element in containers:
        assert element.own_text.strip() == "", (element.tag, element.own_text)
