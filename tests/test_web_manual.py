"""The manual served by the gateway under /manual/ (issue 24): the real built site, the
console's links to it, the same access rules as the console, and a page saying how to
build it (404, never a 500) while it is not built."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dicom_node.journal import Journal
from tests.web_support import TOKEN, settings_for
from web import create_app
from web.manual import BUILD_COMMAND

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ("127.0.0.1", 50124)


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's manual, built by mkdocs into a temporary folder."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.skip("mkdocs is not installed: bin/setup --dev installs it (pyproject dev extra)")
    site = tmp_path_factory.mktemp("manual") / "site"
    result = subprocess.run([mkdocs, "build", "--quiet", "--site-dir", str(site)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600,
                            env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    return site


def _client(tmp_path: Path, site: Path, client: tuple[str, int] | None = LOCAL,
            **web: str) -> TestClient:
    settings = settings_for(tmp_path, tmp_path / "no-models", **web)
    app = create_app(settings, None, Journal(tmp_path / "journal.sqlite"), manual_dir=site,
                     engine_error="not needed here")
    return TestClient(app, client=client) if client else TestClient(app)


def test_the_built_manual_is_served(tmp_path: Path, built_site: Path) -> None:
    with _client(tmp_path, built_site) as c:
        index = c.get("/manual", follow_redirects=False)
        assert index.status_code in (302, 307) and index.headers["location"] == "/manual/"
        home = c.get("/manual/")
        assert home.status_code == 200 and "text/html" in home.headers["content-type"]
        conformance = c.get("/manual/conformance.html")
        assert conformance.status_code == 200 and "Conformance Statement" in conformance.text
        assert "1.2.840.10008.5.1.4.1.1.1.1" in conformance.text  # the DX SOP class table
        hl7 = c.get("/manual/hl7.html")
        assert hl7.status_code == 200 and "ORU^R01^ORU_R01" in hl7.text
        card = c.get("/manual/models/cards/tb-vs-normal.html")
        assert card.status_code == 200
        assert c.get("/manual/no-such-page.html").status_code == 404
        assert c.get("/manual/../pyproject.toml").status_code == 404
        assert c.get("/manual/%2e%2e/%2e%2e/pyproject.toml").status_code == 404


def test_the_console_links_to_the_manual_and_the_api(tmp_path: Path, built_site: Path) -> None:
    with _client(tmp_path, built_site) as c:
        for page in ("/", "/worklist", "/settings"):
            body = c.get(page).text
            assert 'href="/manual/"' in body and 'href="/docs"' in body, page


def test_an_unbuilt_manual_says_how_to_build_it(tmp_path: Path) -> None:
    with _client(tmp_path, tmp_path / "site") as c:
        for path in ("/manual/", "/manual/conformance.html", "/manual/assets/x.css"):
            answer = c.get(path)
            assert answer.status_code == 404, path
            assert BUILD_COMMAND in answer.text and 'href="/docs"' in answer.text


def test_the_manual_needs_the_token_when_one_is_set(tmp_path: Path, built_site: Path) -> None:
    with _client(tmp_path, built_site, client=None, bind_address="0.0.0.0", auth_token=TOKEN) as c:
        refused = c.get("/manual/")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert c.get("/manual/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_without_a_token_only_loopback_clients_read_it(tmp_path: Path, built_site: Path) -> None:
    with _client(tmp_path, built_site, client=("10.1.2.3", 40000)) as c:
        assert c.get("/manual/").status_code == 403
