"""``cvm attack list|run|matrix``."""

from __future__ import annotations

import json

import pytest

from cvm.cli.main import execute
from cvm.host.adversary.catalog import ATTACKS


def test_list_names_every_attack(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["attack", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == [a.name for a in ATTACKS]
    assert rows[0]["expected"]["sev-snp"]["verdict"] == "blocked"
    assert "plaintext" in rows[0]["expected"]["plain"]["why"]  # what the mode lacks
    assert execute(["attack", "list"]) == 0
    assert "remap-page" in capsys.readouterr().out


def test_run_one_attack_in_chosen_modes(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["attack", "run", "remap-page", "--mode", "sev", "--mode", "sev-snp", "--seed", "1"]
    assert execute([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["held"] == out["total"] == 2
    snp = out["results"][1]
    assert snp["mode"] == "sev-snp" and snp["observed"]["mechanism"] == "RMP"
    assert execute(argv) == 0
    assert "2/2 outcomes as expected" in capsys.readouterr().out


def test_matrix_of_one_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["attack", "matrix", "--family", "registers", "--seed", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    registers = [a for a in ATTACKS if a.family.value == "registers"]
    assert out["total"] == 4 * len(registers) == out["held"]


def test_bad_input_is_one_line_and_a_usage_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["attack", "run", "no-such-attack"]) == 64
    err = capsys.readouterr().err
    assert err.startswith("cvm: error: no attack named") and err.count("\n") == 1
    assert execute(["attack", "run", "remap-page", "--mode", "tdx"]) == 64
    assert execute(["attack", "matrix", "--family", "gpu"]) == 64


def test_run_a_boot_attack_against_a_booted_vm(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["attack", "run", "dbx-revoked-shim", "--mode", "sev-snp", "--seed", "4", "--json"]
    assert execute(argv) == 0
    out = json.loads(capsys.readouterr().out)
    (cell,) = out["results"]
    assert cell["held"] and cell["observed"]["mechanism"] == "Secure Boot (dbx)"
    assert "dbx" in cell["observed"]["detail"] and cell["leaks"] == []


def test_a_differing_outcome_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    from cvm.host.adversary import catalog
    from cvm.host.adversary.threat import Mechanism, by

    wrong = replace(catalog.by_name("alias-pages"), sev_snp=by(Mechanism.MEMORY_ENCRYPTION))
    monkeypatch.setattr(catalog, "ATTACKS", (wrong,))
    assert execute(["attack", "run", "alias-pages", "--mode", "sev-snp", "--seed", "5"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN alias-pages [sev-snp]") and "0/1 outcomes as expected" in out
