"""HL7 v2 escape sequences for text in fields (HL7 v2.5.1 section 2.7.4).

A delimiter inside data must be sent as an escape sequence, or the receiver
splits the value: ``|`` becomes ``\\F\\``, ``^`` ``\\S\\``, ``&`` ``\\T\\``,
``~`` ``\\R\\`` and the escape character itself ``\\E\\``. The escape character
is replaced first, so that the sequences introduced for the others are not
escaped again. A line break (carriage return is the segment terminator)
becomes a space: single-line fields have no line breaks, and multi-line text
(TX) is sent as one repetition per line instead; a tab becomes a space too.
Every other control character (C0 0x00-0x1F, DEL and C1 0x80-0x9F) is
removed: 0x0B and 0x1C would end the MLLP frame early, and the rest has no
place in printable HL7 text. Hexadecimal sequences (2.7.5, ``\\Xhh\\``) are
decoded when reading but never written: hl7apy would escape their
backslashes again.
"""

from __future__ import annotations

import re
from typing import Final

ENCODING_CHARACTERS: Final = "^~\\&"
"""MSH-2 with the default component, repetition, escape and subcomponent characters."""

FIELD_SEPARATOR: Final = "|"

_ESCAPES: Final = (
    ("\\", "\\E\\"),
    ("|", "\\F\\"),
    ("^", "\\S\\"),
    ("&", "\\T\\"),
    ("~", "\\R\\"),
    ("\r\n", " "),
    ("\r", " "),
    ("\n", " "),
    ("\t", " "),
)
_CONTROLS: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
"""Control characters left after line breaks and tabs became spaces: removed."""
_UNESCAPES: Final = {"E": "\\", "F": "|", "S": "^", "T": "&", "R": "~"}
_SEQUENCE = re.compile(r"\\(E|F|S|T|R|X[0-9A-Fa-f]+)\\")


def escape(text: str) -> str:
    """``text`` safe to place in one HL7 component or subcomponent."""
    for raw, sequence in _ESCAPES:
        text = text.replace(raw, sequence)
    return _CONTROLS.sub("", text)


def unescape(text: str) -> str:
    """The original text of an escaped value (inverse of :func:`escape`)."""
    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "Xx":
            return bytes.fromhex(code[1:]).decode("latin-1")
        return _UNESCAPES[code]

    return _SEQUENCE.sub(replace, text)


def components(*values: str) -> str:
    """Escaped values joined as the components of one field (``a^b^c``), trailing empties cut."""
    return "^".join(escape(value) for value in values).rstrip("^")
