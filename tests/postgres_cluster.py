"""A throw-away PostgreSQL cluster for the tests (issue 22): initdb + pg_ctl in a temp folder.

Uses Debian's ``postgresql`` package (``/usr/lib/postgresql/<v>/bin``, installed by
``bin/setup --dev``). PostgreSQL refuses to run as root, so under root the
server runs as the ``postgres`` system user the package creates (``runuser``);
otherwise as the current user. It listens on 127.0.0.1 on a free port with
``trust`` authentication and ``fsync=off`` (a test cluster, thrown away at the
end of the session). Each test gets its own database, copied from a template
that already carries this release's schema.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

SUPERUSER = "cxr"


def postgres_bin() -> Path | None:
    """The newest installed server's bin folder, or ``None``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def why_unavailable() -> str | None:
    """``None`` when a cluster can be started here, else why not (a skip reason)."""
    if postgres_bin() is None:
        return ("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: "
                "install Debian's postgresql package (bin/setup --dev)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' system user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One running server; :meth:`new_database` hands out fresh databases."""

    def __init__(self) -> None:
        binaries = postgres_bin()
        assert binaries is not None, why_unavailable()
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="cxr-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as_user, *argv], check=True, capture_output=True, timeout=120,
                       cwd=self.root)

    def start(self) -> Cluster:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> None:
        """Run one statement as the superuser (autocommit: CREATE DATABASE needs it)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def new_database(self, template: str | None = None) -> str:
        """A fresh empty database (or a copy of ``template``); returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        copy = f" TEMPLATE {template}" if template else ""
        self.sql(f"CREATE DATABASE {name}{copy}")
        return self.url(name)
