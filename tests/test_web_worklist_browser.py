"""The worklist in headless Chromium: the patient and score columns, the sort and the finding
filter; the upload page's age field and its "age unknown" note.

Same app and browser as :mod:`tests.test_web_browser`, over a journal that
also holds a child (skipped: outside intended use) and a study with no age
(classified, with the note). Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from inference.engine import InferenceEngine
from tests.gateway_harness import free_port
from tests.test_web_browser import RERENDERED, _shot, browser
from tests.web_support import Filled, engine, models, png_bytes
from tests.worklist_support import (
    AGE_NOTE,
    CHILD_ID,
    CHILD_REASON,
    STUDY_CHILD,
    STUDY_UNKNOWN,
    UNKNOWN_ACCESSION,
    UNKNOWN_ID,
    fill_worklist,
)
from web.server import WebServer, start_web

pytestmark = pytest.mark.slow
__all__ = ["browser", "engine", "models"]  # fixtures of tests/test_web_browser.py, tests/web_support.py

SCORE = re.compile(r"^(\d\.\d{3}), threshold (\d\.\d{3})$")
ROWS_SCRIPT = """return [...document.querySelectorAll("#studies tbody tr")].map(r => ({
  uid: r.dataset.uid,
  cells: Object.fromEntries([...r.querySelectorAll("td[class]")].map(c => [c.className, c.innerText]))
}));"""


@pytest.fixture(scope="module")
def worklist(tmp_path_factory: pytest.TempPathFactory, models: Path,
             engine: InferenceEngine) -> Filled:
    return fill_worklist(tmp_path_factory.mktemp("worklist-browser"), models, engine,
                         port=free_port())


@pytest.fixture(scope="module")
def server(worklist: Filled) -> Iterator[str]:
    running: WebServer = start_web(worklist.settings, worklist.journal)
    yield f"http://127.0.0.1:{worklist.settings.web.port}"
    running.stop()


def _rows(driver: WebDriver) -> list[dict[str, Any]]:
    return list(driver.execute_script(ROWS_SCRIPT))


def _tb_scores(rows: list[dict[str, Any]]) -> list[float]:
    found = [SCORE.match(r["cells"].get("tb-score", "")) for r in rows]
    return [float(m.group(1)) for m in found if m]


def test_worklist_columns_sort_and_finding_filter(browser: WebDriver, server: str) -> None:
    browser.get(server + "/worklist")
    wait = WebDriverWait(browser, 30, ignored_exceptions=RERENDERED)
    wait.until(lambda d: len(_rows(d)) == 6)
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#studies thead th")]
    for title in ("Patient ID", "Patient name", "Accession", "Study date", "Modality", "Status",
                  "Impression", "TB vs normal", "Pneumonia vs TB"):
        assert title in headers, headers
    rows = {r["uid"]: r["cells"] for r in _rows(browser)}
    unknown = rows[STUDY_UNKNOWN]
    assert (unknown["patient-id"], unknown["patient-name"], unknown["accession"],
            unknown["study-date"], unknown["modality"]) == (
        UNKNOWN_ID, "Okonkwo, Adaeze Ngozi", UNKNOWN_ACCESSION, "2025-03-17", "DX")
    assert AGE_NOTE in unknown["impression"]
    tb, pn = SCORE.match(unknown["tb-score"]), SCORE.match(unknown["pneumonia-score"])
    assert tb and pn and tb.group(2) == "0.500", unknown  # a score against its threshold
    assert "%" not in " ".join(unknown.values())
    assert rows[STUDY_CHILD]["patient-id"] == CHILD_ID
    assert CHILD_REASON in browser.find_element(By.CSS_SELECTOR, f'tr[data-uid="{STUDY_CHILD}"]').text
    _shot(browser, "worklist-columns")

    Select(browser.find_element(By.ID, "sort")).select_by_value("tb-score")
    wait.until(lambda d: len(_tb_scores(_rows(d))) >= 4 and _rows(d)[-1]["cells"].get("tb-score") == "")
    scores = _tb_scores(_rows(browser))
    assert scores == sorted(scores, reverse=True), scores
    _shot(browser, "worklist-sorted")

    finding = unknown["impression"].split("\n")[0].split(";")[0]  # the note follows a ";"
    value = {"TB suspected": "tb-suspected", "No TB finding": "no-tb-finding"}[finding]
    Select(browser.find_element(By.ID, "finding-filter")).select_by_value(value)
    wait.until(lambda d: all(r["cells"]["impression"].startswith(finding) for r in _rows(d)))
    filtered = _rows(browser)
    assert STUDY_UNKNOWN in {r["uid"] for r in filtered} and STUDY_CHILD not in {r["uid"] for r in filtered}
    assert len(filtered) < 6
    _shot(browser, "worklist-filtered")


def test_upload_says_when_the_age_is_unknown(browser: WebDriver, server: str, tmp_path: Path) -> None:
    picture = tmp_path / "chest.png"
    picture.write_bytes(png_bytes(size=400))
    browser.get(server + "/")
    wait = WebDriverWait(browser, 60, ignored_exceptions=RERENDERED)
    browser.find_element(By.ID, "file").send_keys(str(picture))
    wait.until(ec.visibility_of_element_located((By.ID, "notes")))
    assert browser.find_element(By.ID, "notes").text == AGE_NOTE
    _shot(browser, "upload-age-unknown")
    browser.get(server + "/")
    browser.find_element(By.ID, "age").send_keys("34")
    browser.find_element(By.ID, "file").send_keys(str(picture))
    wait.until(lambda d: d.find_element(By.ID, "status").text.endswith("done."))
    assert not browser.find_element(By.ID, "notes").is_displayed()
    browser.get(server + "/")
    browser.find_element(By.ID, "age").send_keys("6")
    browser.find_element(By.ID, "file").send_keys(str(picture))
    error = wait.until(ec.visibility_of_element_located((By.ID, "error")))
    assert "outside intended use: patient aged 6 years" in error.text
