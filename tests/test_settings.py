"""Settings: precedence (defaults < file < environment < command line), errors, check-config."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from config import DEFAULT_CONFIG, ConfigError, load_settings
from config.schema import Settings
from dicom_node import cli
from dicom_node.policy import AssociationPolicy
from dicom_node.status import RejectReason

MINIMAL = {"dicom": {"allowed_callers": [{"ae_title": "PACS"}]}}


def write_yaml(folder: Path, data: object) -> Path:
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_config_is_valid_and_safe_by_default() -> None:
    settings = load_settings(DEFAULT_CONFIG, environ={})
    assert settings.dicom.port == 11112
    assert settings.dicom.bind_address == "127.0.0.1"
    assert not settings.dicom.accept_any_caller and settings.dicom.allowed_callers
    assert not settings.dicom.tls.enabled


def test_defaults_then_file_then_environment_then_command_line(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {**MINIMAL, "storage": {"min_free_mb": 5},
                                 "inference": {"workers": 3}})
    env = {"CXR_GATEWAY__INFERENCE__WORKERS": "4", "CXR_GATEWAY__DICOM__PORT": "11113",
           "UNRELATED": "x"}
    settings = load_settings(path, env, ["dicom.port=11114"])
    assert settings.dicom.ae_title == "CXRGATEWAY"  # default
    assert settings.storage.min_free_mb == 5  # file
    assert settings.inference.workers == 4  # environment over file
    assert settings.dicom.port == 11114  # command line over environment


def test_environment_values_are_typed_and_nested(tmp_path: Path) -> None:
    env = {"CXR_GATEWAY__DICOM__TIMEOUTS__ACSE": "5.5",
           "CXR_GATEWAY__DICOM__ALLOWED_CALLERS": "[{ae_title: MODALITY, host: 10.0.0.9}]",
           "CXR_GATEWAY__INFERENCE__HEATMAP": "false"}
    settings = load_settings(write_yaml(tmp_path, MINIMAL), env)
    assert settings.dicom.timeouts.acse == 5.5
    assert [(c.ae_title, c.host) for c in settings.dicom.allowed_callers] == [
        ("MODALITY", "10.0.0.9")]
    assert settings.inference.heatmap is False


def test_settings_are_immutable() -> None:
    settings = load_settings(DEFAULT_CONFIG, {})
    with pytest.raises(ValueError, match="frozen"):
        settings.dicom.port = 1  # type: ignore[misc]


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    settings = load_settings(write_yaml(tmp_path, {**MINIMAL, "base_dir": str(tmp_path)}), {})
    assert settings.path(settings.storage.spool_dir) == tmp_path / "var" / "spool"
    assert settings.path(Path("/abs/x")) == Path("/abs/x")


def test_every_bad_value_is_reported_with_key_source_and_expectation(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"dicom": {"ae_title": "A" * 17, "prot": 1,
                                           "allowed_callers": [{"ae_title": "BAD\\AE"}]},
                                 "inference": {"thresholds": {"tb-vs-normal": 1.5}}})
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {"CXR_GATEWAY__DICOM__PORT": "70000"}, ["nonsense"])
    problems = caught.value.problems
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert "dicom.ae_title: AE title 'AAAAAAAAAAAAAAAAA' is longer than 16" in text
    assert "dicom.port:" in text and "environment CXR_GATEWAY__DICOM__PORT" in text
    assert "expected: TCP port to listen on, 1-65535" in text
    assert "dicom.prot: Extra inputs are not permitted" in text
    assert "dicom.allowed_callers.0.ae_title" in text and "backslash" in text
    assert "inference.thresholds: threshold of tb-vs-normal is 1.5" in text
    assert "'nonsense' is not KEY=VALUE" in text


def test_no_allowed_caller_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="list the peers in dicom.allowed_callers"):
        load_settings(write_yaml(tmp_path, {"dicom": {"port": 104}}), {})


def test_tls_without_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cert_file, key_file, ca_file not set"):
        load_settings(write_yaml(tmp_path, MINIMAL), {}, ["dicom.tls.enabled=true"])


def test_missing_and_broken_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path / "absent.yaml", {})
    broken = tmp_path / "broken.yaml"
    broken.write_text("dicom: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken, {})


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_check_config_exit_codes_and_output(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    good = write_yaml(tmp_path, {**MINIMAL, "base_dir": str(tmp_path),
                                 "inference": {"workers": 0}, "storage": {"min_free_mb": 0}})
    assert _run(["check-config", "--config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    assert _run(["check-config", "--config", str(good), "--set", "dicom.port=0"]) == 2
    out = capsys.readouterr().out
    assert "ERROR dicom.port" in out and "[set in command line dicom.port]" in out


def test_check_config_reports_missing_models(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml(tmp_path, {**MINIMAL, "base_dir": str(tmp_path),
                                 "inference": {"workers": 1, "models_dir": "nowhere"}})
    assert _run(["check-config", "--config", str(path)]) == 2
    assert "ERROR inference.models_dir" in capsys.readouterr().out


def _policy(**changes: object) -> AssociationPolicy:
    data = {"dicom": {"ae_title": "GW", "allowed_callers": [
        {"ae_title": "PACS", "host": "10.0.0.5"}, {"ae_title": "MODALITY"}], **changes}}
    return AssociationPolicy.from_settings(Settings.model_validate(data).dicom)


@pytest.mark.parametrize(("calling", "called", "host", "expected"), [
    ("PACS", "GW", "10.0.0.5", None),
    ("PACS", "GW", "10.0.0.6", RejectReason.CALLING_AE_NOT_RECOGNIZED),  # right AE, wrong host
    ("MODALITY", "GW", "192.168.1.1", None),  # no host given: any host
    ("STRANGER", "GW", "10.0.0.5", RejectReason.CALLING_AE_NOT_RECOGNIZED),
    ("PACS", "OTHER", "10.0.0.5", RejectReason.CALLED_AE_NOT_RECOGNIZED),
    ("PACS  ", "GW  ", "10.0.0.5", None),  # AE title padding is not significant (PS3.5 6.2)
])
def test_association_policy(calling: str, called: str, host: str,
                            expected: RejectReason | None) -> None:
    assert _policy().decide(calling, called, host) is expected


def test_policy_without_called_ae_check_and_with_any_caller() -> None:
    policy = _policy(check_called_ae=False, accept_any_caller=True)
    assert policy.decide("ANYONE", "WHATEVER", "1.2.3.4") is None
