"""The demo's HTML report: one self-contained page.

The overall verdict first; the run's seed and cvm's version; the chain of trust of the SEV-SNP
boot; the secret page as each mode's guest and host read it (two pictures per mode); then the
attack matrix — per attack and mode the expected outcome beside the observed one, green where
it held, red where it broke, with what was observed in full (nothing is cut).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass

from cvm.scenarios.attack_matrix import Result
from cvm.scenarios.picture import grey_png

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:120em}"
    "figure{display:inline-block;margin:0 1em}img{image-rendering:pixelated;"
    "border:1px solid #888}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
    "padding:4px 6px;vertical-align:top;font-size:90%;white-space:normal}"
    ".held{background:#dfd}.broken{background:#fbb}.na{background:#eee}"
    ".verdict{font-size:130%;padding:.5em 1em;display:inline-block}"
    "small{color:#444;word-break:break-all}"
)


Step = tuple[str, str, str, str, str]  # who, did, what (in full), PCR, SHA-256


@dataclass(frozen=True)
class Panel:
    """One mode's secret page as its guest and its host read it."""

    caption: str
    guest: bytes
    host: bytes
    note: str


def _esc(text: object) -> str:
    return html.escape(str(text))


def _picture(label: str, page: bytes) -> str:
    data = base64.b64encode(grey_png(page, 64)).decode()
    return (f"<figure><img alt='{_esc(label)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_esc(label)}</figcaption></figure>")


def _matrix(results: Sequence[Result]) -> list[str]:
    modes = list(dict.fromkeys(r.mode for r in results))
    rows: dict[str, dict[object, Result]] = {}
    for result in results:
        rows.setdefault(result.attack.name, {})[result.mode] = result
    parts = ["<table><tr><th rowspan=2>attack</th><th rowspan=2>family</th>"
             "<th rowspan=2>what the host does</th>"]
    parts += [f"<th colspan=2>{_esc(m.value)}</th>" for m in modes]
    parts.append("</tr><tr>" + "<th>expected</th><th>observed</th>" * len(modes) + "</tr>")
    for name, cells in rows.items():
        first = next(iter(cells.values())).attack
        parts.append(f"<tr><td><b>{_esc(name)}</b></td><td>{_esc(first.family.value)}</td>"
                     f"<td>{_esc(first.does)}</td>")
        for mode in modes:
            cell = cells.get(mode)
            if cell is None:
                parts.append("<td></td><td></td>")
                continue
            css = "held" if cell.held else "broken"
            if cell.held and cell.observed.verdict.value == "not applicable":
                css = "na"
            leaks = ""
            if cell.leaks:
                where = sorted({leak.secret for leak in cell.leaks})
                leaks = (f"<br><small>canary scan: {len(cell.leaks)} hit(s) of "
                         f"{_esc(', '.join(where))}"
                         f"{' — must be clean here' if cell.must_be_clean else ''}</small>")
            why = f"<br><small>{_esc(cell.expected.why)}</small>" if cell.expected.why else ""
            parts.append(f"<td>{_esc(cell.expected)}{why}</td><td class='{css}'>"
                         f"<b>{_esc(cell.observed)}</b><br><small>{_esc(cell.observed.detail)}"
                         f"</small>{leaks}</td>")
        parts.append("</tr>")
    parts.append("</table>")
    return parts


def _chain(steps: Sequence[Step], outcome: str) -> list[str]:
    parts = ["<table><tr><th>who</th><th>did</th><th>what</th><th>PCR</th><th>SHA-256</th></tr>"]
    for actor, verb, subject, pcr, digest in steps:
        parts.append(f"<tr><td>{_esc(actor)}</td><td>{_esc(verb)}</td><td>{_esc(subject)}</td>"
                     f"<td>{_esc(pcr)}</td><td><small>{_esc(digest)}</small></td></tr>")
    parts.append(f"</table><p><b>{_esc(outcome)}</b></p>")
    return parts


def demo_report(*, verdict: str, held: bool, seed: int | None, version: str,
                steps: Sequence[Step], outcome: str, panels: Sequence[Panel],
                results: Sequence[Result]) -> str:
    """The whole page."""
    css = "held" if held else "broken"
    parts = [
        "<!doctype html><meta charset='utf-8'><title>cvm demo</title>",
        f"<style>{STYLE}</style><h1>cvm demo</h1>",
        f"<p class='verdict {css}'>{_esc(verdict)}</p>",
        f"<p>cvm {_esc(version)} · seed {_esc(seed if seed is not None else 'none (random)')}"
        f" · {len(results)} attack cells</p>",
        "<h2>The chain of trust of the SEV-SNP boot</h2>",
        *_chain(steps, outcome),
        "<h2>One secret page, as the guest and as the host read it</h2>",
    ]
    for panel in panels:
        parts.append(f"<h3>{_esc(panel.caption)}</h3><div>{_picture('guest reads', panel.guest)}"
                     f"{_picture('host reads', panel.host)}</div><p>{_esc(panel.note)}</p>")
    parts.append("<h2>The host's attacks, every mode, measured live</h2>")
    parts += _matrix(results)
    return "\n".join(parts)
