"""MkDocs hook: the model cards (models/*/card.md) become pages under models/cards/.

The cards stay beside their models (training writes them there); the manual
shows them without a second copy to keep in step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.model_cards")

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
CARDS_URI = "models/cards"


def on_files(files: Files, config: Any) -> Files:
    """Add one generated page per model card."""
    for card in sorted(MODELS_DIR.glob("*/card.md")):
        uri = f"{CARDS_URI}/{card.parent.name}.md"
        files.append(File.generated(config, uri, content=card.read_text(encoding="utf-8")))
    return files
