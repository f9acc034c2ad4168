"""The README's quick start runs as written (issue 24): every ```sh block is marked
``<!-- test -->`` and executed here, in order, from the repository root.

What the test changes, and why:

* ``bin/serve`` is started as written, in the background, and stopped at the end.
  The settings it would share with a gateway already running on this machine go
  through the environment (which beats the config file, as everywhere): free DICOM
  and web ports, and the spool, journal and results under a temporary folder. In
  the commands, ``11112`` and ``8080`` become those ports and ``chest.dcm`` a
  synthetic chest radiograph written for the test.
* ``.venv/bin`` is taken off ``PATH``, as the README asks (a plain shell), so
  ``echoscu`` and ``storescu`` are DCMTK's.
* Skipped, each with its reason in :data:`SKIPPED`: only ``bin/test``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dicom_factory import make_chest, write
from tests.gateway_harness import dcmtk_tool, free_port

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- test -->"
SERVER = "bin/serve"
SKIPPED = {
    "bin/test": "bin/test is the whole suite, this test included: running it here would recurse",
}
START_TIMEOUT_S = 300.0  # bin/serve runs bin/setup (pip) first, then loads the models
COMMAND_TIMEOUT_S = 300.0

pytestmark = pytest.mark.slow


def readme_blocks() -> list[tuple[bool, list[str]]]:
    """(marked, command lines) of every ```sh block of the README, in order."""
    lines = (ROOT / "README.md").read_text("utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].strip() == "```sh":
            marked = index > 0 and lines[index - 1].strip() == MARK
            end = lines.index("```", index + 1)
            body = [line for line in lines[index + 1:end] if line.strip()]
            blocks.append((marked, body))
            index = end
        index += 1
    return blocks


def test_every_shell_block_of_the_readme_is_marked_for_this_test() -> None:
    blocks = readme_blocks()
    assert blocks, "the README has no ```sh block"
    assert all(marked for marked, _ in blocks), f"unmarked ```sh blocks: put {MARK} before each"
    for _, body in blocks:
        assert not any(line.rstrip().endswith("\\") for line in body), "one command per line"


@dataclass
class QuickStart:
    """The environment the commands run in and the literals replaced in them."""

    env: dict[str, str]
    literals: dict[str, str]


@pytest.fixture()
def quick_start(tmp_path: Path) -> QuickStart:
    """Environment, substitutions and the file to send; the gateway is not started yet."""
    if dcmtk_tool("echoscu") is None or dcmtk_tool("storescu") is None:
        pytest.skip("DCMTK echoscu/storescu not installed (apt-get install dcmtk; bin/setup --dev does)")
    dicom_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_GATEWAY__")}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                  if Path(p).resolve() != (ROOT / ".venv" / "bin").resolve())
    env.update({
        "CXR_GATEWAY__DICOM__PORT": str(dicom_port),
        "CXR_GATEWAY__WEB__PORT": str(web_port),
        "CXR_GATEWAY__STORAGE__SPOOL_DIR": str(tmp_path / "spool"),
        "CXR_GATEWAY__STORAGE__DATABASE": str(tmp_path / "journal.sqlite"),
        "CXR_GATEWAY__STORAGE__RESULTS_DIR": str(tmp_path / "results"),
    })
    chest = write(make_chest(), tmp_path / "chest.dcm")
    return QuickStart(env, {"11112": str(dicom_port), "8080": str(web_port), "chest.dcm": str(chest)})


def _substitute(command: str, literals: dict[str, str]) -> str:
    for literal, value in literals.items():
        command = re.sub(rf"(?<![\w.]){re.escape(literal)}(?![\w])", value, command)
    return command


def _wait_healthy(proc: subprocess.Popen[str], web_port: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{SERVER} exited with {proc.returncode}:\n{_output(proc)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    pytest.fail(f"{SERVER} did not answer /healthz within {START_TIMEOUT_S:.0f} s")


def _output(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=30)
    return out[-4000:]


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_readme_quick_start_runs_as_written(quick_start: QuickStart) -> None:
    env = quick_start.env
    commands = [line for marked, body in readme_blocks() if marked for line in body]
    assert any(c.startswith(SERVER) for c in commands), f"no {SERVER} command in the README"
    server: subprocess.Popen[str] | None = None
    ran = []
    try:
        for command in commands:
            if command.split()[0] in SKIPPED:
                continue
            if command.startswith(SERVER):
                server = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, start_new_session=True)
                _wait_healthy(server, quick_start.literals["8080"])
                continue
            shown = _substitute(command, quick_start.literals)
            result = subprocess.run(["bash", "-c", shown], cwd=ROOT, env=env,
                                    capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
            assert result.returncode == 0, (f"README command failed ({result.returncode}): {shown}\n"
                                            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
            ran.append(command.split()[0])
    finally:
        if server is not None:
            _stop(server)
    assert {"echoscu", "storescu", ".venv/bin/cxr-gateway", "curl"} <= set(ran)
