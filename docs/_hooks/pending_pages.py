"""MkDocs hook: a page another change is still writing gets a short stand-in, so links hold.

``several-nodes.md`` (several gateways on one PostgreSQL database) is written with
that feature; until it is in ``docs/`` the manual says so instead of failing the build.
A real file always wins.
"""

from __future__ import annotations

from typing import Any

from mkdocs.structure.files import File, Files

PENDING = {
    "several-nodes.md": (
        "# Several nodes\n\n"
        "Several gateway nodes sharing one PostgreSQL database are described here once that "
        "feature is in this version. Until then run one node per journal: "
        "`storage.database` in [Configure](configure.md#storage-spool-journal-results).\n"
    ),
}


def on_files(files: Files, config: Any) -> Files:
    """Add a stand-in for each pending page that has no file yet."""
    for uri, content in PENDING.items():
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, content=content))
    return files
