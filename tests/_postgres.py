"""A throw-away PostgreSQL server for the store tests: initdb into a temporary directory, start on
a free port on 127.0.0.1 with its socket in that directory, password authentication (so the tests
see a URL with a password in it), one database; stopped and deleted afterwards.

PostgreSQL refuses to run as root; as root the server runs as an unprivileged user (postgres,
which Debian's package creates, else nobody, else one made with useradd) through runuser or su.
Where no binaries are found or privileges cannot be dropped, `start` raises Unavailable with the
reason and the tests skip with it (`make test` installs Debian's postgresql where it is missing).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from _server import free_port


class Unavailable(Exception):
    pass


def _bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                        if Path(p).parent.name.isdigit() else 0, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for c in candidates:
        if (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl) found: `make test` installs Debian's "
                      "postgresql package, or run `apt-get install postgresql`")


def _unprivileged_user() -> str | None:
    """None when we are not root (the server runs as us)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    name = "reflectlm-pg"
    if subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                      capture_output=True).returncode != 0:
        raise Unavailable("running as root, and no unprivileged user exists or can be created for PostgreSQL")
    return name


def _as(user: str | None, cmd: list[str]) -> list[str]:
    if user is None:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *cmd]
    if shutil.which("su"):
        import shlex

        return ["su", "-s", "/bin/sh", user, "-c", shlex.join(cmd)]
    raise Unavailable("running as root and neither runuser nor su is available to drop privileges for PostgreSQL")


class Postgres:
    def __init__(self):
        self.root: Path | None = None
        self.bindir = _bindir()
        self.user = _unprivileged_user()
        self.password = secrets.token_urlsafe(12)
        self.port = free_port()

    def start(self, database: str = "reflectlm_test") -> str:
        # Not pytest's tmp_path: its parents are private to root, and the server's user must reach its directory.
        self.root = Path(tempfile.mkdtemp(prefix="reflectlm-pg-"))
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            uid = pwd.getpwnam(self.user).pw_uid
            for p in (self.root, sock, pwfile):
                os.chown(p, uid, -1)
        run = lambda cmd, **kw: subprocess.run(_as(self.user, cmd), capture_output=True, text=True, timeout=120, **kw)  # noqa: E731
        r = run([str(self.bindir / "initdb"), "-D", str(data), "-U", "reflectlm", "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "--encoding=UTF8", "--no-locale"])
        if r.returncode != 0:
            raise Unavailable(f"initdb failed: {(r.stderr or r.stdout)[-800:]}")
        opts = f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=100"
        r = run([str(self.bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self.root / "log"), "-w",
                 "-t", "60", "start"])
        if r.returncode != 0:
            log = (self.root / "log").read_text(errors="replace")[-800:] if (self.root / "log").is_file() else ""
            raise Unavailable(f"PostgreSQL did not start: {(r.stderr or r.stdout)[-400:]} {log}")
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="reflectlm", password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        return f"postgresql+psycopg://reflectlm:{self.password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.root / "data" / "postmaster.pid").is_file():
            subprocess.run(_as(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast",
                                           "-w", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
