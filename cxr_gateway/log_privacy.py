"""Keep patient data out of the log, including what third-party libraries write there.

Our own modules never log patient identifiers (house style). Libraries do:
highdicom and pydicom quote header values in their warnings ("... Patient's
Name 'DOE^JOHN' ..."), and exception messages quote the value that failed
("time data '31.12.1971' does not match format ..."). :class:`PrivacyFilter`,
installed on every handler at start-up, decides by where a text comes from,
not by a list of libraries or attributes:

* a record of a logger outside this project's packages at WARNING or above,
  and every Python warning (``py.warnings``), keeps its logger, level,
  category and source location; its text is withheld;
* an exception's message is kept only when the exception type is ours (our
  messages follow the house style) or an :class:`OSError` (network and file
  errors quote addresses and paths, never header values); otherwise the
  traceback keeps its frames (file, line, function, source line) and the
  message is withheld, in the record's traceback (with its causes) and where
  an exception is an argument of the message. A withheld message quoted
  inside another text of the record is cut out of it too.

There is no setting that lets identifiers into the log; IT who need a
header value read it from the spool file the log names by SOP Instance UID.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from importlib.metadata import packages_distributions
from types import TracebackType
from typing import Final

log = logging.getLogger(__name__)

DISTRIBUTION: Final = "cxr-gateway"
WITHHELD: Final = "text withheld: third-party messages may quote DICOM or HL7 header values"
_MARK: Final = "_cxr_privacy_checked"
_WARNING_TEXT = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<category>\w+): ", re.DOTALL)


def own_packages() -> frozenset[str]:
    """Top-level packages of this project (from the installed distribution's metadata)."""
    found = {top for top, dists in packages_distributions().items() if DISTRIBUTION in dists}
    return frozenset(found | {__name__.split(".")[0]})


class PrivacyFilter(logging.Filter):
    """Rewrites a record before any handler formats it; always lets it through."""

    def __init__(self, own: frozenset[str] | None = None) -> None:
        super().__init__()
        self.own = own_packages() if own is None else own

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _MARK, False):  # one record passes through every handler
            return True
        setattr(record, _MARK, True)
        withheld: list[str] = []
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._traceback(record.exc_info[1], withheld)
        if record.name == "py.warnings":
            record.msg, record.args = _warning_summary(record.getMessage()), ()
        elif not self._is_own(record.name) and record.levelno >= logging.WARNING:
            where = f"{_short(record.pathname)}:{record.lineno}"
            record.msg, record.args = f"{record.levelname.lower()} at {where} ({WITHHELD})", ()
        else:
            self._clean_args(record, withheld)
        if withheld:
            record.msg, record.args = _cut(record.getMessage(), withheld), ()
        return True

    def _is_own(self, module: str) -> bool:
        return module.split(".")[0] in self.own

    def _keeps_message(self, exc: BaseException) -> bool:
        return isinstance(exc, OSError) or self._is_own(type(exc).__module__)

    def describe(self, exc: BaseException, withheld: list[str]) -> str:
        """``Type: message``, or ``Type (raised at file:line; text withheld ...)``."""
        name = type(exc).__qualname__
        if self._keeps_message(exc):
            return f"{name}: {exc}" if str(exc) else name
        if str(exc):
            withheld.append(str(exc))
        where = _raise_site(exc.__traceback__)
        return f"{name} (raised at {where}; {WITHHELD})"

    def _clean_args(self, record: logging.LogRecord, withheld: list[str]) -> None:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(self.describe(a, withheld) if isinstance(a, BaseException)
                                and not self._keeps_message(a) else a for a in args)

    def _traceback(self, exc: BaseException, withheld: list[str]) -> str:
        """The traceback as ``logging`` prints it, each withheld message left out."""
        parts: list[str] = []
        for link, item in _chain(exc):
            if link:
                parts.append(f"\n{link}\n\n")
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_tb(item.__traceback__))
            parts.append(self.describe(item, withheld) + "\n")
        return _cut("".join(parts).rstrip("\n"), withheld)


_CAUSE: Final = "The above exception was the direct cause of the following exception:"
_CONTEXT: Final = "During handling of the above exception, another exception occurred:"


def _chain(exc: BaseException) -> list[tuple[str, BaseException]]:
    """The exception and its causes/contexts, oldest first, each after the line linking it."""
    items: list[BaseException] = [exc]
    links: list[str] = []  # links[k]: how items[k + 1] led to items[k]
    current: BaseException | None = exc
    while current is not None:
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            break
        if any(current is seen for seen in items):
            break
        items.append(current)
        links.append(link)
    ordered = [("", items[-1])]
    ordered += [(links[k], items[k]) for k in range(len(items) - 2, -1, -1)]
    return ordered


def _raise_site(tb: TracebackType | None) -> str:
    if tb is None:
        return "unknown location"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{_short(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"


def _short(path: str) -> str:
    """A library path from its package on (``highdicom/sr/value_types.py``)."""
    for marker in ("site-packages/", "dist-packages/", "lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "lib/python3." and "/" in tail else tail
    return path


def _warning_summary(text: str) -> str:
    """``warnings.formatwarning`` output reduced to its category and location."""
    match = _WARNING_TEXT.match(text)
    if match is None:
        return f"a Python warning ({WITHHELD})"
    return f"{match['category']} at {_short(match['file'])}:{match['line']} ({WITHHELD})"


def _cut(text: str, withheld: list[str]) -> str:
    for secret in sorted(set(withheld), key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "<withheld>")
    return text


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """Uncaught exceptions of threads (pynetdicom's among them) go through the filter too."""
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    log.error("uncaught exception in %s", name,
              exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def install(handlers: list[logging.Handler] | None = None) -> PrivacyFilter:
    """Route Python warnings and uncaught thread exceptions to ``logging``, and filter every
    root handler (or ``handlers``)."""
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception
    privacy = PrivacyFilter()
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        handler.addFilter(privacy)
    return privacy
