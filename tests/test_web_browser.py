"""The console in headless Chromium (Debian ``chromium`` + ``chromium-driver``, Selenium).

The app runs as ``serve`` runs it (:func:`web.server.start_web`, uvicorn on a
free loopback port) over a journal and outbox filled by the real worker path.
Screenshots are kept under ``test-artifacts/``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from inference.engine import InferenceEngine
from tests.conftest import PROJECT_ROOT
from tests.dicom_factory import make_chest, write
from tests.gateway_harness import free_port
from tests.web_support import STUDY_A, Filled, engine, fill, models, png_bytes, settings_for
from web.server import WebServer, start_web

pytestmark = pytest.mark.slow
__all__ = ["engine", "models"]  # fixtures shared from tests/web_support.py
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000")

# The worklist re-renders its rows; an element handle may go stale between two calls.
RERENDERED = (StaleElementReferenceException,)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, models: Path, engine: InferenceEngine) -> Filled:
    folder = tmp_path_factory.mktemp("web-browser")
    return fill(folder, settings_for(folder, models, port=free_port()), engine)


@pytest.fixture(scope="module")
def server(filled: Filled) -> Iterator[str]:
    running: WebServer = start_web(filled.settings, filled.journal)
    yield f"http://127.0.0.1:{filled.settings.web.port}"
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian chromium and chromium-driver are not installed (bin/setup --dev)")
    profile = tempfile.mkdtemp(prefix="cxr-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"web-{name}.png"))


def _image_loaded(driver: WebDriver, element_id: str) -> bool:
    return bool(driver.execute_script(
        "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0;",
        element_id))


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_upload_shows_finding_and_heatmap(browser: WebDriver, server: str, tmp_path: Path,
                                          kind: str) -> None:
    upload = tmp_path / "chest.png"
    if kind == "png":
        upload.write_bytes(png_bytes(size=512))
    else:
        upload = write(make_chest(rows=400, columns=360), tmp_path / "chest.dcm")
    browser.get(server + "/")
    assert "not a diagnosis" in browser.find_element(By.CLASS_NAME, "notice").text
    browser.find_element(By.ID, "file").send_keys(str(upload))
    wait = WebDriverWait(browser, 60)
    wait.until(ec.visibility_of_element_located((By.ID, "result")))
    wait.until(lambda d: _image_loaded(d, "heatmap") and _image_loaded(d, "image"))
    finding = browser.find_element(By.ID, "finding").text
    assert finding in {"TB suspected", "No TB finding",
                       "TB suspected; pattern also consistent with pneumonia"}
    rows = browser.find_elements(By.CSS_SELECTOR, "#scores tbody tr")
    assert [r.get_attribute("data-classifier") for r in rows] == ["tb_vs_normal", "pneumonia_vs_tb"]
    assert "0.500" in rows[0].text and "%" not in rows[0].text  # the configured TB threshold
    assert f"{kind.upper()}" in browser.find_element(By.ID, "input").text
    _shot(browser, f"upload-{kind}")


def test_upload_of_a_non_image_shows_the_reason(browser: WebDriver, server: str,
                                                tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an x-ray at all " * 20)
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    error = WebDriverWait(browser, 30, ignored_exceptions=RERENDERED).until(
        ec.visibility_of_element_located((By.ID, "error")))
    assert "not a PNG, JPEG or DICOM" in error.text


def test_worklist_retry_dead_letter(browser: WebDriver, server: str) -> None:
    browser.get(server + "/worklist")
    wait = WebDriverWait(browser, 30, ignored_exceptions=RERENDERED)
    row = (By.CSS_SELECTOR, f'tr[data-uid="{STUDY_A}"]')
    wait.until(ec.presence_of_element_located(row))
    assert "dead-letter" in browser.find_element(*row).text
    assert "Modality NM" in browser.find_element(By.ID, "studies").text  # skipped, with reason
    _shot(browser, "worklist-dead-letter")
    browser.find_element(*row).find_element(By.CSS_SELECTOR, "button.retry").click()
    wait.until(lambda d: "classified" in d.find_element(*row).text)
    assert not browser.find_element(*row).find_elements(By.CSS_SELECTOR, "button.retry")
    assert "1 pending" in browser.find_element(*row).text
    browser.find_element(*row).find_element(By.CSS_SELECTOR, "td.uid").click()
    detail = wait.until(ec.visibility_of_element_located((By.ID, "detail")))
    assert "pacs" in detail.text and "pending" in detail.text
    _shot(browser, "worklist-retried")


def test_worklist_orders_by_tb_score(browser: WebDriver, server: str) -> None:
    browser.get(server + "/worklist")
    wait = WebDriverWait(browser, 30, ignored_exceptions=RERENDERED)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#studies tbody tr")) == 4)
    browser.find_element(By.CSS_SELECTOR, '#sort option[value="tb-score"]').click()
    # Read the re-rendered table in one script call: the rows are replaced while the page sorts,
    # so element handles taken in one call may be stale in the next.
    first_uid = 'const r = document.querySelector("#studies tbody tr"); return r && r.dataset.uid;'
    wait.until(lambda d: d.execute_script(first_uid) not in (None, "1.2.826.0.1.3680043.8.498.7004"))
    scores = browser.execute_script(
        'return [...document.querySelectorAll("#studies tbody tr")]'
        '.map(r => r.querySelector("td.tb-score").innerText);')
    numbers = [float(s.split(",")[0]) for s in scores if s]  # "0.540, threshold 0.500"
    assert len(numbers) == 2 and numbers == sorted(numbers, reverse=True)


def test_settings_page_without_secrets(browser: WebDriver, server: str) -> None:
    browser.get(server + "/settings")
    text = WebDriverWait(browser, 30, ignored_exceptions=RERENDERED).until(
        lambda d: d.find_element(By.ID, "config").text or None)
    assert text is not None
    assert "CXRGATEWAY" in text and "PACS" in text and "loopback only" in text
    _shot(browser, "settings")
