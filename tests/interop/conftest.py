"""Fixtures of the interop tests: the ``sev-snp-measure`` oracle beside cvm's ``measure`` verb,
and a runner for tpm2-tools and friends against a TPM server (its free TCP ports:
``free_port_pair`` in the suite's conftest).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cvm.cli.main import execute

Run = Callable[..., subprocess.CompletedProcess[str]]
Measure = Callable[[list[str]], str]


@pytest.fixture(scope="module")
def oracle(require_tool: Callable[[str], str]) -> str:
    """The path of ``sev-snp-measure`` (PyPI, the test oracle), beside this Python first."""
    beside = Path(sys.executable).parent / "sev-snp-measure"
    return str(beside) if beside.exists() else require_tool("sev-snp-measure")


@pytest.fixture
def measure_ours(capsys: pytest.CaptureFixture[str]) -> Measure:
    """``measure_ours(args)``: what ``cvm measure *args`` prints (it must succeed)."""

    def run(args: list[str]) -> str:
        capsys.readouterr()
        code = execute(["measure", *args])
        out = capsys.readouterr().out.strip()
        assert code == 0, out
        return out

    return run


@pytest.fixture(scope="module")
def measure_theirs(oracle: str) -> Measure:
    """``measure_theirs(args)``: what ``sev-snp-measure *args`` prints (it must succeed)."""

    def run(args: list[str]) -> str:
        done = subprocess.run([oracle, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    return run


@pytest.fixture(scope="session")
def tool_runner() -> Callable[[Path, str, float], Run]:
    """``tool_runner(workdir, tcti, timeout)`` gives ``run(*argv, check=True, stdin=None,
    extra_env=None)``: a real tool run in ``workdir`` with ``TPM2TOOLS_TCTI=tcti``; with
    ``check`` a non-zero exit fails the test with the tool's stderr."""

    def runner(workdir: Path, tcti: str, timeout: float) -> Run:
        def run(*argv: str, check: bool = True, stdin: str | None = None,
                extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "TPM2TOOLS_TCTI": tcti, **(extra_env or {})}
            result = subprocess.run(list(argv), cwd=workdir, env=env, capture_output=True,
                                    text=True, input=stdin, timeout=timeout, check=False)
            if check and result.returncode:
                raise AssertionError(f"{argv} failed: {result.stderr}")
            return result

        return run

    return runner


@pytest.fixture(scope="module")
def tools(require_tool: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory,
          free_port_pair: Callable[[], int], tool_runner: Callable[[Path, str, float], Run],
          ) -> Iterator[tuple[Run, Path]]:
    """A running swtpm and a runner for tpm2-tools commands against it."""
    swtpm = require_tool("swtpm")
    for tool in ("tpm2_startauthsession", "tpm2_checkquote", "tpm2_loadexternal"):
        require_tool(tool)
    workdir = tmp_path_factory.mktemp("swtpm")
    port = free_port_pair()
    process = subprocess.Popen(
        [swtpm, "socket", "--tpm2",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
         "--tpmstate", f"dir={workdir}", "--flags", "startup-clear,not-need-init"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)

    run = tool_runner(workdir, f"swtpm:host=127.0.0.1,port={port}", 60)
    run.port = port  # type: ignore[attr-defined]
    try:
        yield run, workdir
    finally:
        process.terminate()
        process.wait(timeout=10)
