"""The container images and the compose stack, built and run as hospital IT would (issue 23).

Starts ``dockerd`` when none answers (skipped, with the reason, only where it cannot start),
builds ``docker/Dockerfile`` and ``docker/orthanc.Dockerfile`` (layers are reused between runs),
brings ``docker/compose.yaml`` up with docker-compose and waits for both health checks. Then it
does what a PACS does: a chest radiograph uploaded to Orthanc over its REST API is routed by
``route-cxr.lua`` to the gateway, and the SR and the heatmap Secondary Capture must come back to
Orthanc and an ORU^R01 reach an MLLP listener on the host (the container reaches it as
``host.docker.internal``, the host's docker0 address). The gateway is stopped with
``docker stop`` in the middle of a batch and started again: every study still gets its SR.
Everything (containers, network, volumes) is removed at the end, also on failure.

Base image: the official ``python:3.11-slim`` / ``debian:bookworm-slim`` when present or
pullable, else a local Debian base made once with ``docker/base-image.sh`` (mmdebstrap) and kept
as ``cxr-base:bookworm``; ``CXR_TEST_BASE_IMAGE`` chooses another. Build time, image sizes and
the compose logs go to the test log and ``test-artifacts/containers/``.
Select alone with ``pytest -m containers``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.conftest import PROJECT_ROOT, require_shipped_models
from tests.dicom_validation import dciodvfy
from tests.gateway_harness import free_port
from tests.mllp_listener import MllpListener
from tests.results_rig import chest_study, wait_until

pytestmark = [pytest.mark.containers, pytest.mark.slow]

DOCKER_DIR = PROJECT_ROOT / "docker"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "containers"
LOCAL_BASE = "cxr-base:bookworm"
OFFICIAL_BASES = ("python:3.11-slim", "debian:bookworm-slim")
GATEWAY_IMAGE, ORTHANC_IMAGE = "cxr-gateway:latest", "cxr-orthanc:latest"
MAX_IMAGE_MB = 700
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
QUIET_PERIOD_S = 5
BATCH = 6
DAEMON_START_S, HEALTHY_S, RESULT_S = 60.0, 300.0, 300.0


def _run(args: list[str], timeout: float = 900.0, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=PROJECT_ROOT)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """A line in the test log even under -q (and in test-artifacts/containers/summary.txt)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[containers] {line}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (ARTIFACTS / "summary.txt").open("a") as out:
        out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")


# --- the daemon ----------------------------------------------------------------------------

def _docker_client() -> str:
    """Debian's client first: its ``docker build`` has BuildKit built in (DOCKER_BUILDKIT=1)."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("no docker client: install docker.io (bin/setup --dev)")


def _daemon_problem(docker: str) -> str | None:
    """None when a daemon answers, else what ``docker info`` said."""
    done = _run([docker, "info"], timeout=30, check=False)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no answer"])[-1]


@pytest.fixture(scope="module")
def docker() -> Iterator[str]:
    """The docker client, with a daemon answering; starts ``dockerd`` (and stops it) if needed."""
    client = _docker_client()
    problem = _daemon_problem(client)
    if problem is None:
        yield client
        return
    daemon = shutil.which("dockerd")
    if daemon is None:
        pytest.skip("dockerd not installed: Debian package docker.io (bin/setup --dev)")
    if os.geteuid() != 0:
        pytest.skip(f"no Docker daemon for this user ({problem}) and dockerd needs root: start "
                    "it (systemctl start docker) and add this user to the docker group")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (ARTIFACTS / "dockerd.log").open("ab") as log:
        proc = subprocess.Popen([daemon], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + DAEMON_START_S
    while _daemon_problem(client) is not None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = (ARTIFACTS / "dockerd.log").read_text(errors="replace")[-1500:]
            pytest.skip(f"dockerd cannot start on this machine (exit {proc.poll()}): {tail}")
        time.sleep(0.5)
    try:
        yield client
    finally:
        proc.terminate()
        proc.wait(60)


# --- the images ----------------------------------------------------------------------------

def _has_image(docker: str, name: str) -> bool:
    return _run([docker, "image", "inspect", name], timeout=30, check=False).returncode == 0


def _base_image(docker: str, request: pytest.FixtureRequest) -> str | None:
    """The base to build on: None = the Dockerfiles' official defaults, else a local image."""
    chosen = os.environ.get("CXR_TEST_BASE_IMAGE")
    if chosen:
        return chosen
    if all(_has_image(docker, b) or _run([docker, "pull", "-q", b], timeout=300,
                                          check=False).returncode == 0 for b in OFFICIAL_BASES):
        return None
    if not _has_image(docker, LOCAL_BASE):
        if shutil.which("mmdebstrap") is None:
            pytest.skip("no registry answers and mmdebstrap is not installed (bin/setup --dev)")
        started = time.monotonic()
        _run([str(DOCKER_DIR / "base-image.sh"), LOCAL_BASE], timeout=900)
        _say(request, f"no registry: bootstrapped {LOCAL_BASE} with mmdebstrap in "
                      f"{time.monotonic() - started:.0f} s")
    return LOCAL_BASE


def _build(docker: str, base: str | None, dockerfile: str, tag: str, context: Path) -> None:
    """``docker build`` as docs/install.md "Build offline" shows: host network, the CA as a build secret."""
    args = [docker, "build", "--network", "host", "-f", str(DOCKER_DIR / dockerfile), "-t", tag]
    if base is not None:
        args += ["--build-arg", f"BASE_IMAGE={base}"]
    if CA_BUNDLE.is_file():
        args += ["--secret", f"id=ca,src={CA_BUNDLE}"]
    args += [a for v in PROXY_VARS if v in os.environ for a in ("--build-arg", f"{v}={os.environ[v]}")]
    done = _run(args + [str(context)], env={**os.environ, "DOCKER_BUILDKIT": "1"}, check=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"build-{dockerfile}.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"building {dockerfile} failed:\n{done.stderr[-4000:]}"


def _image_mb(docker: str, tag: str) -> float:
    size = _run([docker, "image", "inspect", "-f", "{{.Size}}", tag], timeout=30).stdout
    return int(size) / 1e6


@pytest.fixture(scope="module")
def images(docker: str, request: pytest.FixtureRequest) -> str | None:
    """Both images built (cached layers reused); the base they were built on."""
    require_shipped_models()  # the image ships models/: nothing to test without them
    base = _base_image(docker, request)
    for dockerfile, tag, context in (("Dockerfile", GATEWAY_IMAGE, PROJECT_ROOT),
                                     ("orthanc.Dockerfile", ORTHANC_IMAGE, DOCKER_DIR)):
        started = time.monotonic()
        _build(docker, base, dockerfile, tag, context)
        _say(request, f"built {tag} on {base or 'the official base'} in "
                      f"{time.monotonic() - started:.0f} s: {_image_mb(docker, tag):.0f} MB")
    return base


# --- the stack -----------------------------------------------------------------------------

def _compose_command(docker: str) -> list[str]:
    """Debian's docker-compose (1.29), or Compose v2 where that is what is installed."""
    v1 = shutil.which("docker-compose")
    if v1:
        return [v1]
    if _run([docker, "compose", "version"], timeout=30, check=False).returncode == 0:
        return [docker, "compose"]
    pytest.skip("no docker-compose: install docker-compose (bin/setup --dev)")


@dataclass
class Stack:
    docker: str
    compose: list[str]
    env: dict[str, str]
    listener: MllpListener
    orthanc_url: str
    web_url: str
    ids: dict[str, str] = field(default_factory=dict)

    def run_compose(self, *args: str, files: tuple[str, ...] = ("compose.yaml",),
                    check: bool = True) -> subprocess.CompletedProcess[str]:
        chosen = [a for f in files for a in ("-f", str(DOCKER_DIR / f))]
        return _run([*self.compose, "-p", self.env["COMPOSE_PROJECT_NAME"], *chosen, *args],
                    env=self.env, check=check)

    def container(self, service: str) -> str:
        if service not in self.ids:
            self.ids[service] = self.run_compose("ps", "-q", service).stdout.strip()
        return self.ids[service]

    def health(self, service: str) -> str:
        out = _run([self.docker, "inspect", "-f", "{{.State.Health.Status}}",
                    self.container(service)], timeout=30, check=False)
        return out.stdout.strip()

    def wait_healthy(self, *services: str) -> None:
        wait_until(lambda: all(self.health(s) == "healthy" for s in services), HEALTHY_S,
                   f"{', '.join(services)} healthy", poll_s=2.0)

    def _http(self, url: str, auth: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(url, data=body, method="POST" if body else "GET",
                                         headers={"Authorization": auth})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def orthanc(self, path: str, payload: Any = None) -> Any:
        """Orthanc's REST API as user admin (the password from the environment, as compose has it)."""
        auth = "Basic " + b64encode(f"admin:{self.env['ORTHANC_PASSWORD']}".encode()).decode()
        body = payload if isinstance(payload, bytes) or payload is None else json.dumps(payload).encode()
        return self._http(self.orthanc_url + path, auth, body)

    def gateway_api(self, path: str) -> Any:
        return self._http(self.web_url + path, f"Bearer {self.env['CXR_GATEWAY_TOKEN']}")

    def results(self, study_uid: str) -> dict[str, list[str]]:
        """The study's instances in Orthanc by series modality (``CR``, ``SR``, ``OT``)."""
        series = self.orthanc("/tools/find", {"Level": "Series", "Expand": True,
                                              "Query": {"StudyInstanceUID": study_uid}})
        found: dict[str, list[str]] = {}
        for s in series:
            found.setdefault(s["MainDicomTags"].get("Modality", ""), []).extend(s["Instances"])
        return found


def _env_file(folder: Path, listener_port: int) -> Path:
    """The test's docker/gateway.env: short quiet period, fast retries, the host's MLLP listener."""
    lines = [f"CXR_GATEWAY__AGGREGATION__QUIET_PERIOD_S={QUIET_PERIOD_S}",
             "CXR_GATEWAY__AGGREGATION__POLL_INTERVAL_S=0.5",
             "CXR_GATEWAY__DELIVERY__BACKOFF_BASE_S=1", "CXR_GATEWAY__DELIVERY__BACKOFF_MAX_S=5",
             "CXR_GATEWAY__DELIVERY__PROBE_INTERVAL_S=2", "CXR_GATEWAY__DELIVERY__POLL_INTERVAL_S=0.5",
             "CXR_GATEWAY__DESTINATIONS__HL7=[{name: ris, host: host.docker.internal, "
             f"port: {listener_port}, receiving_application: RIS, receiving_facility: HOSP}}]"]
    path = folder / "gateway.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def _stack_env(folder: Path, base: str | None, listener_port: int) -> dict[str, str]:
    ports = {k: str(free_port()) for k in ("CXR_GATEWAY_WEB_PORT", "CXR_GATEWAY_DICOM_PORT",
                                           "ORTHANC_HTTP_PORT", "ORTHANC_DICOM_PORT")}
    env = {**os.environ, **ports, "COMPOSE_PROJECT_NAME": f"cxrtest{os.getpid()}",
           "CXR_GATEWAY_TOKEN": secrets.token_hex(24), "ORTHANC_PASSWORD": secrets.token_hex(12),
           "CXR_GATEWAY_ENV_FILE": str(_env_file(folder, listener_port))}
    if base is not None:
        env["CXR_BASE_IMAGE"] = base
    return env


def _host_address(docker: str) -> str:
    """The docker0 address: what ``host.docker.internal`` (host-gateway) is in the containers."""
    return _run([docker, "network", "inspect", "bridge", "-f",
                 "{{(index .IPAM.Config 0).Gateway}}"], timeout=30).stdout.strip()


def _save_logs(stack: Stack) -> None:
    logs = stack.run_compose("logs", "--no-color", "--timestamps", check=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "compose.log").write_text(logs.stdout + logs.stderr)


@pytest.fixture(scope="module")
def stack(docker: str, images: str | None, tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Iterator[Stack]:
    """docker/compose.yaml up (no build: the images are fresh), both healthy; then down -v."""
    folder = tmp_path_factory.mktemp("containers")
    with MllpListener(host=_host_address(docker)) as listener:
        env = _stack_env(folder, images, listener.port)
        stack = Stack(docker, _compose_command(docker), env, listener,
                      f"http://127.0.0.1:{env['ORTHANC_HTTP_PORT']}",
                      f"http://127.0.0.1:{env['CXR_GATEWAY_WEB_PORT']}")
        try:
            started = time.monotonic()
            stack.run_compose("up", "-d", "--no-build")
            stack.wait_healthy("gateway", "orthanc")
            _say(request, f"stack up and healthy in {time.monotonic() - started:.0f} s")
            yield stack
        finally:
            _save_logs(stack)
            stack.run_compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)


# --- the tests -----------------------------------------------------------------------------

def test_gateway_image_is_small_non_root_and_without_tensorflow(
        docker: str, images: str | None, request: pytest.FixtureRequest) -> None:
    size = _image_mb(docker, GATEWAY_IMAGE)
    assert size <= MAX_IMAGE_MB, f"{GATEWAY_IMAGE} is {size:.0f} MB (at most {MAX_IMAGE_MB})"
    config = json.loads(_run([docker, "image", "inspect", "-f", "{{json .Config}}", GATEWAY_IMAGE],
                             timeout=30).stdout)
    assert config["User"] == "cxr"
    probe = config["Healthcheck"]["Test"]
    probe_python = next(arg for arg in probe if arg.endswith("/python"))
    assert "/readyz" in probe[-1]
    check = ("import importlib.util as u, os, pathlib; "
             "print(u.find_spec('tensorflow') is None, u.find_spec('ai_edge_litert') is not None, "
             "os.getuid(), len(list(pathlib.Path('/app/models').rglob('*.tflite'))) > 0, "
             "len(list(pathlib.Path('/app/models').rglob('*.keras'))))")
    out = _run([docker, "run", "--rm", "--read-only", "--network", "none", "--entrypoint",
                probe_python, GATEWAY_IMAGE, "-c", check], timeout=120).stdout.split()
    # no TensorFlow, LiteRT, not root, the shipped networks, no training-only Keras weights
    assert out == ["True", "True", "10001", "True", "0"], out


def test_pacs_round_trip_through_the_stack(stack: Stack, tmp_path: Path) -> None:
    """Orthanc receives a radiograph, routes it; the SR and heatmap come back, the ORU goes out."""
    host_config = json.loads(_run([stack.docker, "inspect", "-f", "{{json .HostConfig}}",
                                   stack.container("gateway")], timeout=30).stdout)
    assert host_config["ReadonlyRootfs"] is True
    study, files = chest_study(tmp_path, "ACC-DOCKER-0001")
    stack.orthanc("/instances", files[0].read_bytes())
    found = wait_until(lambda: _complete(stack, study), RESULT_S, "SR and heatmap in Orthanc", 1.0)
    wait_until(lambda: _oru_for(stack, "ACC-DOCKER-0001"), 60, "ORU at the host's MLLP listener")
    sr_path = tmp_path / "sr.dcm"
    sr_path.write_bytes(_orthanc_file(stack, found["SR"][0]))
    sr = pydicom.dcmread(sr_path)
    assert (sr.Modality, sr.StudyInstanceUID, sr.AccessionNumber) == ("SR", study, "ACC-DOCKER-0001")
    report = dciodvfy(sr_path)
    assert not report.errors, report.output


def test_web_token_from_a_docker_secret(stack: Stack, tmp_path: Path) -> None:
    """docker/compose.secrets.yaml: the token as a Docker secret, never in the environment."""
    token = secrets.token_hex(24)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    check = ("run", "--rm", "--no-deps", "-T", "gateway", "check-config",
             "--config", "/etc/cxr-gateway/gateway.yaml")
    saved = dict(stack.env)
    try:
        stack.env.pop("CXR_GATEWAY_TOKEN")
        stack.env["CXR_GATEWAY_TOKEN_FILE"] = str(token_file)
        with_secret = stack.run_compose(*check, files=("compose.yaml", "compose.secrets.yaml"),
                                        check=False)
        without = stack.run_compose(*check, check=False)
    finally:
        stack.env.clear()
        stack.env.update(saved)
    assert with_secret.returncode == 0, with_secret.stdout + with_secret.stderr
    assert token not in with_secret.stdout + with_secret.stderr
    assert without.returncode != 0 and "web.auth_token" in without.stdout, without.stdout


def test_docker_stop_in_a_batch_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    """``docker stop`` while a batch is in flight, ``docker start``: every study gets its SR."""
    studies = {}
    for n in range(BATCH):
        accession = f"ACC-DOCKER-B{n:02d}"
        study, files = chest_study(tmp_path, accession)
        stack.orthanc("/instances", files[0].read_bytes())
        studies[study] = accession
    wait_until(lambda: set(studies) <= set(_received(stack)), RESULT_S,
               "the whole batch received by the gateway", 0.2)
    reported = sum(1 for uid, at in _received(stack).items() if uid in studies and at)
    _run([stack.docker, "stop", stack.container("gateway")], timeout=120)
    assert reported < BATCH, "the batch was finished before the stop: nothing was in flight"
    _run([stack.docker, "start", stack.container("gateway")], timeout=120)
    stack.wait_healthy("gateway")
    for study, accession in studies.items():
        found = wait_until(partial(_complete, stack, study), RESULT_S, f"SR of {accession}", 1.0)
        assert len(found["SR"]) == 1, found
        wait_until(partial(_oru_for, stack, accession), 60, f"ORU of {accession}")


def _complete(stack: Stack, study: str) -> dict[str, list[str]] | None:
    found = stack.results(study)
    return found if found.get("SR") and found.get("OT") else None


def _oru_for(stack: Stack, accession: str) -> bool:
    return any(accession in message for message in stack.listener.received)


def _orthanc_file(stack: Stack, instance_id: str) -> bytes:
    auth = "Basic " + b64encode(f"admin:{stack.env['ORTHANC_PASSWORD']}".encode()).decode()
    request = urllib.request.Request(f"{stack.orthanc_url}/instances/{instance_id}/file",
                                     headers={"Authorization": auth})
    with urllib.request.urlopen(request, timeout=60) as response:
        data: bytes = response.read()
        return data


def _received(stack: Stack) -> dict[str, float | None]:
    """Study UID -> when the gateway reported it (None while not yet), from its REST API."""
    page = stack.gateway_api("/api/v1/studies?page_size=200")
    return {item["study_uid"]: item["reported_at"] for item in page["items"]}
