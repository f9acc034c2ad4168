"""The manual (docs/) cannot drift from the code: issue 24.

* ``mkdocs build --strict`` passes (a broken link, anchor or missing page fails);
* every generated block (SOP classes, transfer syntaxes, codes, the example ORU)
  equals what ``docs/_hooks/generated.py`` renders from the code today;
* the objects the results stage builds are of the SOP classes the conformance
  statement lists as sent, and its C-STORE status table lists exactly the
  statuses of ``dicom_node/status.py``;
* the Configure page has one row per key of ``config/schema.py``, with its default;
* the README stays a quick start (under 200 lines).
"""

from __future__ import annotations

import datetime
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from delivery.senders import PROPOSED_TRANSFER_SYNTAXES
from dicom_node.status import StoreStatus
from results.not_analysed import build_not_analysed_sr
from results.secondary_capture import build_heatmap_sc
from results.sr import build_sr
from tests.results_support import IDENTITY, source, study_images

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 200
NOW = datetime.datetime(2024, 1, 2, 12, 0, 5)
KEY_ROW = re.compile(r"^\| `(?P<key>[a-z_]+(?:\.[a-z0-9_\[\]]+)*)` \| (?P<default>[^|]*) \|")
STATUS_ROW = re.compile(r"^\| `(0x[0-9A-F]{4})` \|")


def _generated() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generated", DOCS / "_hooks" / "generated.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATED = _generated()


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _mkdocs() -> str:
    found = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("mkdocs is not installed: bin/setup --dev installs it (pyproject dev extra)")
    return found


@pytest.mark.slow
def test_the_manual_builds_strictly(tmp_path: Path) -> None:
    result = subprocess.run([_mkdocs(), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-4000:]
    for page in ("index.html", "conformance.html", "hl7.html", "configure.html",
                 "models/cards/tb-vs-normal.html"):
        assert (tmp_path / "site" / page).is_file(), page


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_generated_blocks_are_what_the_code_gives(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for name, body in GENERATED.blocks(text):
        assert body == GENERATED.render(name), (
            f"{page.relative_to(ROOT)}: block {name} differs from the code; "
            "run .venv/bin/python docs/_hooks/generated.py")


def test_every_generated_block_is_on_a_page() -> None:
    shown = {name for page in _pages() for name, _ in GENERATED.blocks(page.read_text("utf-8"))}
    assert shown == set(GENERATED.GENERATORS)


def test_the_scp_table_lists_cr_dx_and_every_transfer_syntax_decoded() -> None:
    from inference.pixels import SUPPORTED_TRANSFER_SYNTAXES

    conformance = (DOCS / "conformance.md").read_text("utf-8")
    for uid in ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.1.1",
                *map(str, SUPPORTED_TRANSFER_SYNTAXES)):
        assert f"`{uid}`" in conformance, uid


def test_what_the_results_stage_builds_is_listed_as_sent() -> None:
    images = study_images((0.9, 0.1), heatmap=True)
    built = [
        build_sr(images, images[0].prediction, IDENTITY, now=NOW),
        build_heatmap_sc(images[0], IDENTITY, now=NOW),
        build_not_analysed_sr([source(1)], "not analysed: a test", IDENTITY, now=NOW),
    ]
    listed = set(GENERATED.SENT_SOP_CLASSES)
    for ds in built:
        assert str(ds.SOPClassUID) in listed, ds.SOPClassUID
        assert ds.file_meta.TransferSyntaxUID in PROPOSED_TRANSFER_SYNTAXES


def test_the_status_table_lists_exactly_the_statuses_answered() -> None:
    text = (DOCS / "conformance.md").read_text("utf-8")
    section = text.split("SOP specific conformance: Storage SCP (status codes)")[1].split("\n#")[0]
    documented = {m.group(1) for line in section.splitlines() if (m := STATUS_ROW.match(line))}
    assert documented == {f"0x{status.value:04X}" for status in StoreStatus}


def _documented_keys() -> dict[str, str]:
    rows = {}
    for line in (DOCS / "configure.md").read_text("utf-8").splitlines():
        if match := KEY_ROW.match(line):
            assert match.group("key") not in rows, f"{match.group('key')} has two rows"
            rows[match.group("key")] = match.group("default")
    return rows


def _shown(default: object) -> str | None:
    """How the Configure page writes a default; ``None`` when it is described in words."""
    if default is None:
        return None
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    if default == ():
        return "`[]`"
    if default == "":
        return "empty"
    return f"`{default}`"


def test_configure_has_a_row_for_every_key_of_the_schema() -> None:
    schema = GENERATED.config_keys()
    documented = _documented_keys()
    assert sorted(set(schema) - set(documented)) == [], "keys of config/schema.py without a row"
    assert sorted(set(documented) - set(schema)) == [], "rows for keys the schema does not have"


def test_configure_shows_each_default() -> None:
    documented = _documented_keys()
    for key, default in GENERATED.config_keys().items():
        shown = _shown(default)
        if shown is not None:
            assert documented[key].startswith(shown), f"{key}: default {shown}, page says {documented[key]}"


def test_readme_stays_a_quick_start() -> None:
    lines = (ROOT / "README.md").read_text("utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_every_metric_the_manual_names_is_exported() -> None:
    exported = (ROOT / "web" / "metrics.py").read_text("utf-8")
    named = {m for page in _pages() for m in re.findall(r"cxr_gateway_[a-z_]+", page.read_text("utf-8"))}
    assert named, "the manual names no metric"
    for metric in sorted(named):
        base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
        assert f'"{base}"' in exported, f"{metric} is named in docs/ but web/metrics.py has no {base}"
