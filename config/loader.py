"""Build the one :class:`~config.schema.Settings` object from its four sources.

Precedence, lowest first: schema defaults < YAML file < environment
(``CXR_GATEWAY__SECTION__KEY``, nested keys joined by ``__``) < command-line
overrides (``section.key=value``). Environment and command-line values are
parsed as YAML scalars/lists, so ``true``, ``11113`` and ``[A, B]`` work.

Every problem is collected and reported at once, each naming the key, where the
value came from, what was wrong and what is expected (:class:`ConfigError`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from config.schema import Settings

log = logging.getLogger(__name__)

ENV_PREFIX = "CXR_GATEWAY__"
DEFAULT_CONFIG = Path(__file__).resolve().parent / "gateway.yaml"

Tree = dict[str, Any]


class ConfigError(ValueError):
    """The configuration cannot be used; :attr:`problems` has one line per bad value."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
) -> Settings:
    """Merge the sources and validate; raise :class:`ConfigError` listing every problem."""
    tree: Tree = {}
    origins: dict[str, str] = {}
    problems: list[str] = []
    if config_file is not None:
        _merge(tree, _read_file(config_file, problems), origins, f"file {config_file}")
    env = os.environ if environ is None else environ
    for key, value in sorted(env.items()):
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
            _merge(tree, _nest(dotted, _scalar(value)), origins, f"environment {key}")
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted.strip():
            problems.append(f"command line: {item!r} is not KEY=VALUE (e.g. dicom.port=11113)")
            continue
        _merge(tree, _nest(dotted.strip(), _scalar(value)), origins, f"command line {dotted}")
    return _validate(tree, origins, problems)


def _read_file(path: Path, problems: list[str]) -> Tree:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        problems.append(f"config file {path}: cannot be read ({err.strerror}); "
                        "give an existing file with --config")
        return {}
    except yaml.YAMLError as err:
        problems.append(f"config file {path}: not valid YAML ({err})")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"config file {path}: expected a mapping of sections at the top level, "
                        f"got {type(data).__name__}")
        return {}
    return data


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def _nest(dotted: str, value: Any) -> Tree:
    node: Any = value
    for part in reversed(dotted.split(".")):
        node = {part: node}
    return dict(node)


def _merge(base: Tree, new: Tree, origins: dict[str, str], source: str, prefix: str = "") -> None:
    """Deep-merge ``new`` into ``base``; record the source of every leaf."""
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, origins, source, f"{dotted}.")
            continue
        base[key] = value
        for known in [k for k in origins if k.startswith(f"{dotted}.")]:
            del origins[known]
        origins[dotted] = source


def _validate(tree: Tree, origins: dict[str, str], problems: list[str]) -> Settings:
    try:
        settings = Settings.model_validate(tree)
    except ValidationError as err:
        problems.extend(_explain(e, origins) for e in err.errors())
    if problems:
        raise ConfigError(problems)
    return settings


def _explain(error: Any, origins: dict[str, str]) -> str:
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    parts = [f"{key}: {message}"]
    if error["type"] not in ("missing", "extra_forbidden") and not isinstance(error["input"], dict):
        parts.append(f"(got {error['input']!r})")
    source = _origin(loc, origins)
    if source:
        parts.append(f"[set in {source}]")
    hint = describe(loc)
    if hint:
        parts.append(f"-- expected: {hint}")
    return " ".join(parts)


def _origin(loc: list[str], origins: dict[str, str]) -> str | None:
    dotted = ".".join(loc)
    below = {src for key, src in origins.items() if key == dotted or key.startswith(f"{dotted}.")}
    if below:
        return ", ".join(sorted(below))
    for end in range(len(loc) - 1, 0, -1):
        found = origins.get(".".join(loc[:end]))
        if found:
            return found
    return None


def describe(loc: list[str]) -> str | None:
    """The schema's description of the setting at ``loc`` (``["dicom", "port"]``), if any."""
    model: type[BaseModel] | None = Settings
    description: str | None = None
    for part in loc:
        if model is None or part not in model.model_fields:
            continue
        field = model.model_fields[part]
        description = field.description
        model = _model_of(field.annotation)
    return description


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
