"""Run the external DICOM inspectors on a written file: dciodvfy (dicom3tools) and dsrdump (DCMTK).

Zero dciodvfy errors is the bar for every object the gateway writes; the
warnings are returned so a test can show or restrict them.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ERROR_PREFIX = "Error - "
WARNING_PREFIX = "Warning - "


@dataclass(frozen=True)
class DciodvfyReport:
    """What dciodvfy said about one file."""

    iod: str  # the IOD dciodvfy recognised (first line), e.g. "SCImage"
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    output: str


def require_tool(name: str, package: str) -> str:
    """Path of ``name``, or skip the test naming the Debian package to install."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package {package}; run bin/setup)")
    return path


def parse_dciodvfy(output: str) -> DciodvfyReport:
    """Split dciodvfy output into the recognised IOD, errors and warnings."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = tuple(line for line in lines if line.startswith(ERROR_PREFIX))
    warnings = tuple(line for line in lines if line.startswith(WARNING_PREFIX))
    others = [line for line in lines if line not in errors and line not in warnings]
    return DciodvfyReport(others[0] if others else "", errors, warnings, output)


def dciodvfy(path: Path) -> DciodvfyReport:
    """Validate ``path`` against its IOD (PS3.3) with dciodvfy."""
    tool = require_tool("dciodvfy", "dicom3tools")
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    return parse_dciodvfy(done.stdout + done.stderr)


def dsrdump(path: Path) -> str:
    """The SR content tree as DCMTK's dsrdump prints it; fails the test on any error line."""
    tool = require_tool("dsrdump", "dcmtk")
    done = subprocess.run([tool, "+U8", str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    problems = [line for line in done.stderr.splitlines() if line.startswith(("E:", "F:"))]
    assert done.returncode == 0 and not problems, f"dsrdump failed: {done.stderr}"
    return done.stdout
