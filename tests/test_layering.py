"""The import rules of ARCHITECTURE.md, enforced on the source tree."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "cvm"
ACTORS = {
    "amd", "hardware", "vtpm", "guest", "disk", "host", "attestation", "image", "scenarios", "cli",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
    return found


def _all_imports() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(SRC.rglob("*.py"))}


def _top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "cvm" else ""


def test_formats_import_no_crypto_and_no_actor() -> None:
    bad = [
        (mod, imp)
        for mod, imps in _all_imports().items()
        if _top(mod) == "formats"
        for imp in imps
        if _top(imp) in ACTORS | {"crypto"} or imp.split(".")[0] == "cryptography"
    ]
    assert bad == []


def test_only_crypto_imports_cryptography() -> None:
    bad = [
        (mod, imp)
        for mod, imps in _all_imports().items()
        if _top(mod) != "crypto"
        for imp in imps
        if imp.split(".")[0] == "cryptography"
    ]
    assert bad == []


def test_verifier_imports_only_wire_crypto_formats_errors() -> None:
    allowed = {"wire", "crypto", "formats", "errors", "files"}
    bad = [
        (mod, imp)
        for mod, imps in _all_imports().items()
        if mod.startswith("cvm.attestation.verifier")
        for imp in imps
        if imp.startswith("cvm.")
        and _top(imp) not in allowed
        and not imp.startswith("cvm.attestation.verifier")
    ]
    assert bad == []


def test_nothing_but_cli_and_scenarios_imports_the_adversary() -> None:
    bad = [
        (mod, imp)
        for mod, imps in _all_imports().items()
        if not (mod.startswith(("cvm.cli", "cvm.host.adversary", "cvm.scenarios")))
        for imp in imps
        if imp.startswith("cvm.host.adversary")
    ]
    assert bad == []


def test_hardware_knows_nothing_of_host_or_guest() -> None:
    bad = [
        (mod, imp)
        for mod, imps in _all_imports().items()
        if _top(mod) == "hardware"
        for imp in imps
        if _top(imp) in {"host", "guest", "image", "scenarios", "cli", "attestation"}
    ]
    assert bad == []


def test_host_imports_neither_guest_nor_owner_tools() -> None:
    bad = [
        (mod, imp)
        for mod, imps in _all_imports().items()
        if _top(mod) == "host"
        for imp in imps
        if _top(imp) in {"guest", "image", "scenarios", "cli"}
    ]
    assert bad == []


def test_the_tpm_engine_knows_nothing_of_its_users() -> None:
    bad = [
        (mod, imp)
        for mod, imps in _all_imports().items()
        if _top(mod) == "vtpm"
        for imp in imps
        if _top(imp) in {"guest", "host", "image", "scenarios", "cli", "disk", "attestation"}
    ]
    assert bad == []


def test_wire_and_errors_stand_alone() -> None:
    bad = [
        (mod, imp)
        for mod, imps in _all_imports().items()
        if _top(mod) in {"wire", "errors"}
        for imp in imps
        if imp.startswith("cvm.") and _top(imp) not in {"wire", "errors"}
    ]
    assert bad == []


def test_files_stand_alone() -> None:
    assert [imp for imp in _all_imports()["cvm.files"] if imp.startswith("cvm.")] == []


def test_the_rules_see_the_tree() -> None:
    imports = _all_imports()
    assert "cvm.wire.layout" in imports
    assert "cvm.errors" in imports["cvm.wire.layout"]


def test_the_guest_reaches_host_and_owner_only_through_the_runner() -> None:
    """Inside the VM nothing knows the host, the owner's tools or the relying party; only
    cvm.guest.run, which joins the three parties for one run, imports them."""
    bad = [
        (mod, imp)
        for mod, imps in _all_imports().items()
        if _top(mod) == "guest" and mod != "cvm.guest.run"
        for imp in imps
        if _top(imp) in {"host", "image", "attestation", "scenarios", "cli"}
    ]
    assert bad == []
