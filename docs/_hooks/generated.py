"""The parts of the manual that come from the code: tables and an example message.

A page marks such a block with ``<!-- generated: NAME -->`` ... ``<!-- end: NAME -->``.
``tests/test_docs.py`` checks every block equals :func:`render` of its name, so a
SOP class, transfer syntax or ORU field cannot change without the manual.
To rewrite the blocks after a code change::

    .venv/bin/python docs/_hooks/generated.py
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)",
                   re.DOTALL)


def _uid_rows(uids: list[str]) -> str:
    from pydicom.uid import UID

    rows = ["| name | UID |", "|---|---|"]
    rows += [f"| {UID(uid).name} | `{uid}` |" for uid in uids]
    return "\n".join(rows) + "\n"


def scp_sop_classes() -> str:
    """Every SOP class the SCP accepts (dicom_node/contexts.py)."""
    from dicom_node.contexts import storage_contexts, verification_contexts

    uids = [str(c.abstract_syntax) for c in verification_contexts() + storage_contexts()]
    return _uid_rows(uids)


def scp_transfer_syntaxes() -> str:
    """The transfer syntaxes offered with every storage SOP class, preferred first."""
    from dicom_node.contexts import TRANSFER_SYNTAXES

    return _uid_rows([str(ts) for ts in TRANSFER_SYNTAXES])


SENT_SOP_CLASSES = (
    "1.2.840.10008.1.1",  # Verification: cxr-gateway echo and the delivery probe
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR: results/sr.py, results/not_analysed.py
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage: results/secondary_capture.py
)
"""SOP classes the gateway proposes as SCU; tests/test_docs.py checks the built objects' classes."""


def scu_sop_classes() -> str:
    """What the SCU proposes: C-ECHO, and C-STORE of the objects the results stage writes."""
    return _uid_rows(list(SENT_SOP_CLASSES))


def scu_transfer_syntaxes() -> str:
    """The transfer syntaxes the SCU proposes for every object it sends."""
    from delivery.senders import PROPOSED_TRANSFER_SYNTAXES

    return _uid_rows([str(ts) for ts in PROPOSED_TRANSFER_SYNTAXES])


def example_oru() -> str:
    """An ORU^R01 built by hl7_link.oru from fixed inputs (segments one per line)."""
    from hl7_link.oru import Hl7Endpoints, StudyFacts, build_oru, control_id_for
    from inference.results import ClassifierScore, Prediction, combine

    facts = StudyFacts(patient_id="PAT-0042", issuer_of_patient_id="HOSP",
                       patient_name="Doe^Jane^Q", birth_date="19700115", sex="F",
                       accession_number="ACC20240102", study_uid="1.2.826.0.1.3680043.8.498.7001",
                       study_datetime="20240102083000")
    tb = ClassifierScore("tb-vs-normal", "cxr-tb-vs-normal", "1.6.0", 0.873215, 0.121, "tb", "normal")
    pn = ClassifierScore("pneumonia-vs-tb", "cxr-pneumonia-vs-tb", "1.4.0", 0.2041, 0.637,
                         "pneumonia", "tb")
    prediction = Prediction(tb, pn, combine(tb, pn))
    endpoints = Hl7Endpoints("CXRGATEWAY", "RADIOLOGY", "RIS", "HOSP")
    control_id = control_id_for(facts.study_uid + ".9901.1", "ris")  # (SR SOP Instance UID, destination)
    text = build_oru(facts, prediction, endpoints, control_id,
                     datetime.datetime(2024, 1, 2, 8, 35, 12))
    return "```text\n" + text.replace("\r", "\n").rstrip("\n") + "\n```\n"


def config_keys() -> dict[str, object]:
    """Every key of config/schema.py as ``section.key`` (``[]`` for the items of a list),
    with its default (``None`` when it has none or the default is computed)."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    from config.schema import Settings

    keys: dict[str, object] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, key + ".")
                continue
            item = _item_model(annotation)
            if item is not None:
                keys[key] = ()
                walk(item, key + "[].")
                continue
            default = field.default
            keys[key] = None if default is PydanticUndefined else default

    walk(Settings, "")
    return keys


def _item_model(annotation: object) -> type[BaseModel] | None:
    """The model ``M`` of a ``tuple[M, ...]`` or ``list[M]`` field, else ``None``."""
    from pydantic import BaseModel

    if getattr(annotation, "__origin__", None) not in (tuple, list):
        return None
    item = getattr(annotation, "__args__", (None,))[0]
    return item if isinstance(item, type) and issubclass(item, BaseModel) else None


def result_codes() -> str:
    """Every coded concept of results/codes.py (and the ORU's own), with where it is used."""
    from hl7_link import oru
    from results import codes

    rows = ["| code | scheme | meaning | named in the code |", "|---|---|---|---|"]
    for finding in codes.FindingCode:
        rows.append(f"| `{finding.code.value}` | {finding.code.scheme_designator} | "
                    f"{finding.code.meaning} | `FindingCode.{finding.name}` |")
    for name in sorted(vars(codes)):
        value = getattr(codes, name)
        if isinstance(value, codes.Code) and name.isupper():
            rows.append(f"| `{value.value}` | {value.scheme_designator} | {value.meaning} | `{name}` |")
    for name in ("ALGORITHM_NAME", "ALGORITHM_VERSION", "STUDY_INSTANCE_UID"):
        code, meaning, scheme = getattr(oru, name)
        rows.append(f"| `{code}` | {scheme} | {meaning} | `hl7_link.oru.{name}` |")
    return "\n".join(rows) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "result-codes": result_codes,
    "scp-sop-classes": scp_sop_classes,
    "scp-transfer-syntaxes": scp_transfer_syntaxes,
    "scu-sop-classes": scu_sop_classes,
    "scu-transfer-syntaxes": scu_transfer_syntaxes,
    "example-oru": example_oru,
}


def render(name: str) -> str:
    return GENERATORS[name]()


def blocks(text: str) -> Iterator[tuple[str, str]]:
    """(name, body) of every generated block of a page."""
    for match in BLOCK.finditer(text):
        yield match.group("name"), match.group("body")


def rewrite(text: str) -> str:
    """The page with every generated block rendered afresh."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def main() -> int:
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            sys.stdout.write(f"rewrote {page.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
