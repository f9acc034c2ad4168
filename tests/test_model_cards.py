"""Every model card states its intended use, what it is not for, and what was measured on children."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from training.card import CardInfo, write_card

REQUIRED = ("## Intended use", "15 years and over", "frontal (PA or AP)", "CR or DX",
            "trained reader", "not a diagnosis", "## Not for", "**Children**", "Lateral",
            "Portable / bedside ICU films", "### Measured on children", "about 9 in\n10",
            "about 0.76", "not in this repository")


@pytest.mark.parametrize("task", ["tb-vs-normal", "pneumonia-vs-tb"])
def test_shipped_cards_state_the_intended_use(task: str) -> None:
    card = (PROJECT_ROOT / "models" / task / "card.md").read_text()
    for text in REQUIRED:
        assert text in card, text


def test_generated_cards_state_the_intended_use(tmp_path: Path) -> None:
    info = CardInfo(name="cxr-test", task="tb-vs-normal", version="0.0.1", architecture="compact",
                    input_size=64, threshold=0.5, threshold_rule="rule", positive_label="tb",
                    negative_label="normal", data_root="data", data_hash="0" * 64, split="own",
                    command="cxr-gateway train", train_counts="1", config={}, parity=[],
                    tflite_variant="float32")
    card = write_card(info, {"sets": {}}, tmp_path).read_text()
    for text in REQUIRED:
        assert text in card, text
    assert card.index("## Intended use") < card.index("## Metrics")
