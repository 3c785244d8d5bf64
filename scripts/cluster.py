"""`make cluster` / `make cluster-stop`: the deployment of deploy/cluster/ on this one machine, under var/cluster/.

etcd; three PostgreSQL 15 nodes under Patroni (synchronous_mode_strict); HAProxy (a write port to the leader by
Patroni's REST check, a read port to the replicas); PgBouncer in transaction mode in front of HAProxy's write port;
a Redis of its own; two app "hosts" (127.0.0.2 and 127.0.0.3, each its own VAR_DIR and port, two processes each, one
JWT secret) through PgBouncer; nginx with TLS across them. Every process is started here, detached, and its PID kept
in var/cluster/processes.json; `stop` ends each by that PID (checked against its start time, so a reused PID is
never signalled). var/cluster/cluster.json tells tests and tools where every part is.

As root (CI), Patroni's PostgreSQL and PgBouncer run as the `postgres` user, which owns their folders.

    python -m scripts.cluster start | stop | status
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import psycopg2

from scripts.local_services import nginx_config, self_signed_certificate
from wallet.platform.db import migrate

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "cluster"
HOME = Path(os.environ.get("CLUSTER_HOME", ROOT / "var" / "cluster"))
PG_BIN = Path(os.environ.get("CLUSTER_PG_BIN", "/usr/lib/postgresql/15/bin"))
# Every port is BASE + an offset: unusual ones, below the kernel's ephemeral range and the tests' free_port() range.
BASE = int(os.environ.get("CLUSTER_PORT_BASE", "17400"))
# Seconds each nginx worker sets aside an app host that refused it a connection (deploy/nginx.conf's advice for
# rolling restarts; nginx's default is 10).
NGINX_FAIL_TIMEOUT = 1
NODES = ("pg1", "pg2", "pg3")
HOSTS = (("app1", "127.0.0.2"), ("app2", "127.0.0.3"))
DATABASE = "wallet"
# What each session of the server gets from the database itself (PgBouncer in transaction mode passes no session
# settings): the values the server sends when it talks to PostgreSQL directly (wallet/platform/db.py).
DATABASE_SETTINGS = {"statement_timeout": "5s", "client_connection_check_interval": "500ms"}
APP_SETTINGS = {
    "PROCESSES": "2",
    "DB_POOLER": "transaction",
    "MIGRATE_ON_START": "false",
    "TRUSTED_PROXIES": "127.0.0.1",
    "ALLOW_SELF_DEPOSIT": "true",
    "SHUTDOWN_GRACE": "10",
    "DRAIN_DELAY": "2",
    "LOG_LEVEL": "INFO",
    "DB_POOL_SIZE": "10",
    "PENDING_TIMEOUT": "10",
    "RECOVERY_INTERVAL": "5",
    "METRICS_TOKEN": "cluster-metrics-token",
    # The bank test moves money at full speed between a few wallets: the default daily limits would refuse most of it.
    "DAILY_TRANSFER_LIMIT": "1000000",
    "DAILY_WITHDRAW_LIMIT": "1000000",
}


def ports() -> dict[str, int]:
    named = {
        "etcd": BASE,
        "etcd_peer": BASE + 1,
        "haproxy_write": BASE + 10,
        "haproxy_read": BASE + 11,
        "haproxy_stats": BASE + 12,
        "pgbouncer": BASE + 20,
        "haproxy_write_pooled": BASE + 13,
        "redis": BASE + 30,
        "nginx_https": BASE + 43,
        "nginx_http": BASE + 44,
    }
    for i, node in enumerate(NODES):
        named[f"{node}_pg"] = BASE + 50 + i
        named[f"{node}_rest"] = BASE + 60 + i
        named[f"{node}_pgbouncer"] = BASE + 21 + i
    for i, (host, _) in enumerate(HOSTS):
        named[host] = BASE + 70 + i
    return named


def say(line: str) -> None:
    print(f"cluster: {line}", flush=True)


def render(template: str, target: Path, **values: Any) -> Path:
    """deploy/cluster/<template> with its ${...} filled in, written to `target`."""
    target.write_text(string.Template((DEPLOY / template).read_text()).substitute(values))
    return target


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            raise SystemExit(f"cluster: {what} did not happen within {timeout:.0f} s (logs under {HOME / 'logs'})")
        time.sleep(0.2)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.3):
        return True
    return False


def http_json(url: str, method: str = "GET", body: dict[str, Any] | None = None, timeout: float = 2) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode()
    return json.loads(text) if text.strip().startswith(("{", "[")) else text


def as_postgres() -> dict[str, Any]:
    """Popen's options to run a process as the `postgres` user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": {**os.environ, "HOME": str(HOME)}}


def own_by_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)


class Processes:
    """The processes this harness started: name -> (pid, start time), kept in var/cluster/processes.json."""

    def __init__(self) -> None:
        self.path = HOME / "processes.json"
        self.known: dict[str, list[float]] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def start(self, name: str, command: list[str], **options: Any) -> subprocess.Popen:
        (HOME / "logs").mkdir(parents=True, exist_ok=True)
        log = open(HOME / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **options
        )
        log.close()
        self.known[name] = [proc.pid, psutil.Process(proc.pid).create_time()]
        self.save()
        return proc

    def save(self) -> None:
        self.path.write_text(json.dumps(self.known, indent=2))

    def process(self, name: str) -> psutil.Process | None:
        """The live process recorded under `name` (None when it has ended, or its PID is now another's)."""
        if name not in self.known:
            return None
        pid, started = self.known[name]
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(int(pid))
            if abs(process.create_time() - started) < 0.01 and process.status() != psutil.STATUS_ZOMBIE:
                return process
        return None

    def pid(self, name: str) -> int:
        return int(self.known[name][0])

    def kill(self, *names: str, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        """Signal the processes `names` at once and wait for them to end (SIGKILL when a gentler signal is not heeded
        in time)."""
        processes = [process for process in map(self.process, names) if process is not None]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)
        _, alive = psutil.wait_procs(processes, timeout=timeout)
        for left in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                left.kill()
        psutil.wait_procs(alive, timeout=10)


class Cluster:
    """The running cluster's parts, by name: start, kill and restart each (the bank test's faults use these)."""

    def __init__(self) -> None:
        self.ports = ports()
        self.processes = Processes()
        secret_file = HOME / "jwt_secret"
        self.jwt_secret = secret_file.read_text().strip() if secret_file.exists() else ""

    # --- etcd and Patroni -------------------------------------------------------------------------------------
    def start_etcd(self) -> None:
        data = HOME / "etcd"
        data.mkdir(mode=0o700, exist_ok=True)
        config = render(
            "etcd.yml",
            HOME / "etcd.yml",
            name="etcd1",
            data_dir=data,
            client_port=self.ports["etcd"],
            peer_port=self.ports["etcd_peer"],
        )
        self.processes.start("etcd", ["etcd", "--config-file", str(config)])
        wait_until("etcd answering", lambda: http_json(f"{self.etcd_url}/health")["health"] == "true", 30)

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['etcd']}"

    def node_home(self, node: str) -> Path:
        return HOME / node

    def rest_url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.ports[f'{node}_rest']}"

    def start_patroni(self, node: str) -> None:
        home = self.node_home(node)
        if not home.exists():
            home.mkdir(mode=0o700)
            own_by_postgres(home)
        config = render(
            "patroni.yml",
            home / "patroni.yml",
            name=node,
            rest_port=self.ports[f"{node}_rest"],
            etcd_port=self.ports["etcd"],
            pg_port=self.ports[f"{node}_pg"],
            data_dir=home / "data",
            bin_dir=PG_BIN,
            home=home,
        )
        own_by_postgres(config)
        self.processes.start(node, ["patroni", str(config)], **as_postgres())

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the cluster (GET /cluster), from the first node that answers."""
        for node in NODES:
            with contextlib.suppress(OSError, ValueError):
                return http_json(f"{self.rest_url(node)}/cluster")["members"]
        return []

    def leader(self) -> str | None:
        """The node that leads and runs (its PostgreSQL accepts writes), or None during an election."""
        for member in self.members():
            if member["role"] == "leader" and member["state"] == "running":
                return member["name"]
        return None

    def healthy(self) -> bool:
        """A running leader and two replicas on its timeline, one of them the synchronous standby as the DCS records
        it. (Right after a crash-restart, Patroni's view still names the standby of the old timeline, and then none
        for a few seconds: a leader lost then leaves no node that strict synchronous mode lets take over.)"""
        members = self.members()
        roles = sorted(m["role"] for m in members if m["state"] in ("running", "streaming"))
        if roles != ["leader", "replica", "sync_standby"] or len({m.get("timeline") for m in members}) != 1:
            return False
        by_role = {m["role"]: m for m in members}
        try:
            leader = psycopg2.connect(
                host="127.0.0.1", port=by_role["leader"]["port"], user="postgres", dbname="postgres", connect_timeout=2
            )
            with contextlib.closing(leader), leader.cursor() as cur:
                cur.execute("SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'")
                return [row[0] for row in cur.fetchall()] == [by_role["sync_standby"]["name"]]
        except psycopg2.Error:
            return False

    def postmaster(self, node: str) -> int:
        return int((self.node_home(node) / "data" / "postmaster.pid").read_text().split()[0])

    def kill_postmaster(self, node: str) -> None:
        """kill -9 of the node's PostgreSQL alone (its postmaster and every backend at one instant); Patroni lives."""
        postmaster = psutil.Process(self.postmaster(node))
        processes = [postmaster, *postmaster.children()]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.suspend()
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=10)

    def kill_node(self, node: str) -> None:
        """The node is lost: Patroni and its PostgreSQL killed together."""
        self.processes.kill(node)
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, psutil.NoSuchProcess):
            self.kill_postmaster(node)

    def switchover(self, candidate: str | None = None) -> None:
        """A planned switchover through Patroni's REST API (what `patronictl switchover` calls)."""
        leader = self.leader()
        assert leader, "no leader to switch over from"
        candidate = candidate or next(
            m["name"] for m in self.members() if m["role"] == "sync_standby" and m["state"] in ("running", "streaming")
        )
        http_json(f"{self.rest_url(leader)}/switchover", "POST", {"leader": leader, "candidate": candidate}, timeout=30)

    # --- HAProxy, PgBouncer, Redis ---------------------------------------------------------------------------
    def start_haproxy(self) -> None:
        servers = "\n".join(
            f"    server {node} 127.0.0.1:{self.ports[f'{node}_pg']} check port {self.ports[f'{node}_rest']}"
            for node in NODES
        )

        config = render(
            "haproxy.cfg",
            HOME / "haproxy.cfg",
            home=HOME,
            stats_port=self.ports["haproxy_stats"],
            write_port=self.ports["haproxy_write"],
            read_port=self.ports["haproxy_read"],
            write_servers=servers,
            read_servers=servers,
            write_pooled_port=self.ports["haproxy_write_pooled"],
            write_pooled_servers="\n".join(
                f"    server {node} 127.0.0.1:{self.ports[f'{node}_pgbouncer']} check port {self.ports[f'{node}_rest']}"
                for node in NODES
            ),
        )
        self.processes.start("haproxy", ["haproxy", "-db", "-f", str(config)])
        wait_until("HAProxy listening", lambda: listening(self.ports["haproxy_write"]), 20)

    def routed(self, section: str) -> list[str]:
        """The nodes HAProxy's `section` (write, read) may send connections to now (UP, or UP and going down after a
        failed check), from its stats."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['haproxy_stats']}/;csv", timeout=2) as response:
            rows = response.read().decode().splitlines()
        return [
            row.split(",")[1] for row in rows if row.startswith(f"{section},pg") and row.split(",")[17].startswith("UP")
        ]

    def start_pgbouncer(self, node: str | None = None) -> None:
        """The PgBouncer in front of HAProxy's write port; or, with `node`, one beside that node, in front of its
        PostgreSQL alone (the other order, which HAProxy's `write_pooled` port reaches: `measure` compares them)."""
        name = f"pgbouncer-{node}" if node else "pgbouncer"
        port = self.ports[f"{node}_pgbouncer" if node else "pgbouncer"]
        home = HOME / name
        home.mkdir(exist_ok=True)
        own_by_postgres(home)
        (home / "userlist.txt").write_text('"postgres" ""\n')
        config = render(
            "pgbouncer.ini",
            home / "pgbouncer.ini",
            home=home,
            port=port,
            upstream_port=self.ports[f"{node}_pg" if node else "haproxy_write"],
            read_port=self.ports["haproxy_read"],
        )
        self.processes.start(name, ["pgbouncer", str(config)], **as_postgres())
        wait_until(f"{name} listening", lambda: listening(port), 20)

    def start_redis(self) -> None:
        home = HOME / "redis"
        home.mkdir(exist_ok=True)
        command = ["redis-server", "--port", str(self.ports["redis"]), "--bind", "127.0.0.1", "--save", ""]
        self.processes.start("redis", [*command, "--appendonly", "no", "--dir", str(home)])
        wait_until("Redis listening", lambda: listening(self.ports["redis"]), 20)

    def restart(self, name: str) -> None:
        """Stop (SIGTERM) and start again one of etcd, haproxy, pgbouncer, redis."""
        self.processes.kill(name, sig=signal.SIGTERM)
        {"haproxy": self.start_haproxy, "pgbouncer": self.start_pgbouncer, "redis": self.start_redis}[name]()

    # --- the app hosts and nginx -----------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports['pgbouncer']}/{DATABASE}"

    @property
    def direct_url(self) -> str:
        """The leader itself, through HAProxy's write port (migrations, audits: what PgBouncer cannot carry)."""
        return f"postgresql://postgres:postgres@127.0.0.1:{self.ports['haproxy_write']}/{DATABASE}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports['redis']}/0"

    def host_url(self, host: str) -> str:
        return f"http://{dict(HOSTS)[host]}:{self.ports[host]}"

    def start_host(self, host: str, **settings: str) -> None:
        """Start the app host `host` (APP_SETTINGS, and `settings` over them) and wait until it is ready."""
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")},
            **APP_SETTINGS,
            "HOST": dict(HOSTS)[host],
            "PORT": str(self.ports[host]),
            "VAR_DIR": str(HOME / host),
            "DATABASE_URL": self.database_url,
            # Statements from the replicas (HAProxy's read port, through PgBouncer's `wallet_replica`).
            "DATABASE_READ_URL": f"postgresql://postgres@127.0.0.1:{self.ports['pgbouncer']}/wallet_replica",
            # The periodic jobs' leader locks on sessions of their own: HAProxy's write port, around PgBouncer.
            "DATABASE_SESSION_URL": self.direct_url,
            "REDIS_URL": self.redis_url,
            "JWT_SECRET": self.jwt_secret,
            **settings,
        }
        (HOME / host).mkdir(exist_ok=True)
        proc = self.processes.start(host, [sys.executable, str(ROOT / "server.py")], cwd=ROOT, env=env)
        wait_until(f"{host} ready", lambda: proc.poll() is None and http_json(f"{self.host_url(host)}/ready"), 60)

    def host_pids(self, host: str) -> list[int]:
        process = self.processes.process(host)
        return [process.pid, *(child.pid for child in process.children())] if process else []

    def kill_host(self, host: str) -> None:
        """kill -9 of an app host: its parent and its workers at one instant."""
        processes = [psutil.Process(pid) for pid in self.host_pids(host)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=10)

    def start_nginx(self) -> None:
        home = HOME / "nginx"
        home.mkdir(exist_ok=True)
        if not (home / "cert.pem").exists():
            self_signed_certificate(home)
        # A host that refused a connection (stopped for a rolling restart) is tried again a second later, not ten
        # (nginx's default fail_timeout): else, once the second host stops, the first one, back by then, would still
        # be counted out, and nginx would answer 502 with no live upstream.
        upstreams = [f"{address}:{self.ports[host]} fail_timeout={NGINX_FAIL_TIMEOUT}s" for host, address in HOSTS]
        config = nginx_config(home, upstreams, self.ports["nginx_https"], self.ports["nginx_http"])
        (home / "nginx.conf").write_text(config)
        command = ["nginx", "-p", str(home), "-e", str(home / "error.log"), "-c", str(home / "nginx.conf")]
        self.processes.start("nginx", [*command, "-g", f"daemon off; pid {home}/nginx.pid;"])
        tls = ssl.create_default_context(cafile=str(home / "cert.pem"))
        wait_until(
            "nginx answering",
            lambda: urllib.request.urlopen(f"{self.url}/ready", context=tls, timeout=2).status == 200,
            20,
        )

    @property
    def url(self) -> str:
        return f"https://localhost:{self.ports['nginx_https']}"

    def access_log_size(self) -> int:
        return (HOME / "nginx" / "access.log").stat().st_size

    def proxied_to(self, host: str, offset: int) -> bool:
        """nginx has passed a request to `host` that it answered, in its access log after `offset` (bytes)."""
        upstream = f"{dict(HOSTS)[host]}:{self.ports[host]}"
        with (HOME / "nginx" / "access.log").open("rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
        # The log line ends with the upstreams tried, the one that answered last.
        return any(line.endswith(f" {upstream}") or line.endswith(f", {upstream}") for line in lines)

    def describe(self) -> dict[str, Any]:
        """What var/cluster/cluster.json holds."""
        return {
            "url": self.url,
            "ca": str(HOME / "nginx" / "cert.pem"),
            "app_hosts": [
                {"name": host, "url": self.host_url(host), "pids": self.host_pids(host)} for host, _ in HOSTS
            ],
            "patroni": [
                {
                    "name": node,
                    "rest_url": self.rest_url(node),
                    "pg_port": self.ports[f"{node}_pg"],
                    "data_dir": str(self.node_home(node) / "data"),
                }
                for node in NODES
            ],
            "haproxy": {"write_port": self.ports["haproxy_write"], "read_port": self.ports["haproxy_read"]},
            "pgbouncer_port": self.ports["pgbouncer"],
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "etcd_url": self.etcd_url,
        }

    def write_description(self) -> None:
        (HOME / "cluster.json").write_text(json.dumps(self.describe(), indent=2) + "\n")


def prepare_database(cluster: Cluster) -> None:
    """The wallet database on the leader, its sessions' settings, and the schema at head."""
    port = cluster.ports["haproxy_write"]
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=5)
    conn.autocommit = True
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if not cur.fetchone():
            cur.execute(f"CREATE DATABASE {DATABASE}")
        for name, value in DATABASE_SETTINGS.items():
            cur.execute(f"ALTER DATABASE {DATABASE} SET {name} = '{value}'")
    migrate(cluster.direct_url)


def start() -> None:
    """Start every part in turn; when one fails, stop what was started and say which."""
    running = [name for name in Processes().known if Processes().process(name)]
    if running:
        raise SystemExit(f"cluster: already running ({', '.join(running)}); make cluster-stop first")
    taken = [f"{name} {port}" for name, port in ports().items() if listening(port)]
    if taken:
        raise SystemExit(f"cluster: ports in use ({', '.join(taken)}): free them or set CLUSTER_PORT_BASE")
    try:
        start_parts()
    except BaseException:
        stop()
        raise


def start_parts() -> None:
    started = time.monotonic()
    if HOME.exists():
        shutil.rmtree(HOME)
    HOME.mkdir(parents=True)
    HOME.chmod(0o755)
    (HOME / "jwt_secret").write_text(secrets.token_urlsafe(48))
    cluster = Cluster()
    say(f"etcd on {cluster.etcd_url}")
    cluster.start_etcd()
    say(f"Patroni: {', '.join(NODES)} (PostgreSQL from {PG_BIN})")
    bootstrap = time.monotonic()
    for node in NODES:
        cluster.start_patroni(node)
    wait_until("a leader and a synchronous standby", cluster.healthy, 180)
    say(f"Patroni: leader {cluster.leader()}, bootstrapped in {time.monotonic() - bootstrap:.1f} s")
    say(f"HAProxy: write port {cluster.ports['haproxy_write']}, read port {cluster.ports['haproxy_read']}")
    cluster.start_haproxy()
    say("database and migrations (through HAProxy's write port)")
    wait_until("HAProxy's write port on the leader alone", lambda: cluster.routed("write") == [cluster.leader()], 30)
    prepare_database(cluster)
    say(f"PgBouncer (transaction mode) on {cluster.ports['pgbouncer']}")
    cluster.start_pgbouncer()
    say(f"Redis on {cluster.ports['redis']}")
    cluster.start_redis()
    for host, address in HOSTS:
        say(f"app host {host} on {address}:{cluster.ports[host]} ({APP_SETTINGS['PROCESSES']} processes)")
        cluster.start_host(host)
    say(f"nginx on {cluster.url}")
    cluster.start_nginx()
    cluster.write_description()
    say(f"up in {time.monotonic() - started:.0f} s: {cluster.url} (its CA and every part: {HOME / 'cluster.json'})")


# The order to stop in: the front first, so nothing sends work to a part that has already gone.
STOP_ORDER = (
    ("nginx",),
    tuple(host for host, _ in HOSTS),
    ("pgbouncer", *(f"pgbouncer-{node}" for node in NODES)),
    ("haproxy",),
    NODES,
    ("etcd",),
    ("redis",),
)


def stop() -> None:
    processes = Processes()
    if not processes.known:
        say("nothing recorded under var/cluster: nothing to stop")
        return
    cluster = Cluster()
    for group in STOP_ORDER:
        running = [name for name in group if processes.process(name) is not None]
        if running:
            say(f"stopping {', '.join(f'{name} (pid {processes.pid(name)})' for name in running)}")
            processes.kill(*running, sig=signal.SIGTERM, timeout=40)
    # A PostgreSQL whose Patroni was killed (a lost node) is still running: stopped by its postmaster's PID.
    for node in NODES:
        with contextlib.suppress(FileNotFoundError, ValueError, psutil.NoSuchProcess):
            postmaster = psutil.Process(cluster.postmaster(node))
            if postmaster.name() == "postgres" and str(cluster.node_home(node)) in " ".join(postmaster.cmdline()):
                say(f"stopping {node}'s PostgreSQL (pid {postmaster.pid})")
                postmaster.send_signal(signal.SIGINT)
                psutil.wait_procs([postmaster], timeout=30)
    left = [f"{name} {port}" for name, port in ports().items() if listening(port)]
    processes.known.clear()
    processes.save()
    if left:
        raise SystemExit(f"cluster: still listening after the stop: {', '.join(left)}")
    say("stopped; no port left open")


MEASURE_USERS = 100


def measure(seconds: int, connections: int) -> None:
    """Transfers/s through nginx (wrk, bench/wrk.lua's transfer scenario) on the running cluster as started, without
    the synchronous standby, and with the app hosts on HAProxy's write port instead of PgBouncer: the costs of
    synchronous replication and of the pooler (docs/scaling.md). Leaves the cluster as it found it."""
    import httpx

    cluster = Cluster()
    home = HOME / "measure"
    home.mkdir(exist_ok=True)

    def open_wallet(_: int) -> str:
        # A client and a TLS context each: httpx changes the context's ALPN at every connection, which OpenSSL does
        # not allow while another thread connects with it.
        tls = ssl.create_default_context(cafile=str(HOME / "nginx" / "cert.pem"))
        with httpx.Client(base_url=f"{cluster.url}/api/v1", verify=tls, timeout=60) as http:
            username, password = f"measure_{secrets.token_hex(6)}", secrets.token_urlsafe(12)
            wallet = http.post("/auth/register", json={"username": username, "password": password}).json()["wallet"]
            token = http.post("/auth/login", json={"username": username, "password": password}).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            deposit = http.post(f"/wallets/{wallet['id']}/deposit", json={"amount": "10000.00"}, headers=headers)
            deposit.raise_for_status()
        return f"{token}\t{wallet['id']}\t{username}\n"

    with ThreadPoolExecutor(8) as pool:
        lines = list(pool.map(open_wallet, range(MEASURE_USERS)))
    users = home / "users.tsv"
    users.write_text("".join(lines))

    def run(label: str) -> None:
        command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s"]
        command += ["-s", str(ROOT / "bench" / "wrk.lua"), f"https://127.0.0.1:{cluster.ports['nginx_https']}"]
        done = subprocess.run([*command, "--", "transfer", str(users), secrets.token_hex(4), ""], capture_output=True)
        report = next(line for line in done.stdout.decode().splitlines() if line.startswith("BENCH "))
        found = json.loads(report.removeprefix("BENCH "))
        created = found["statuses"].get("201", 0)
        rate = created / (found["duration_us"] / 1e6)
        say(
            f"{label} (load average {os.getloadavg()[0]:.1f}): {rate:.0f} transfers/s, "
            f"p50 {found['p50_us'] / 1000:.1f} ms, p99 {found['p99_us'] / 1000:.1f} ms, answers {found['statuses']}"
        )

    def synchronous(on: bool) -> None:
        for node in NODES:
            with contextlib.suppress(OSError):
                http_json(f"{cluster.rest_url(node)}/config", "PATCH", {"synchronous_mode": on})
                break
        wait_until("the synchronous setting applied", lambda: cluster.healthy() == on, 60)

    say(f"{connections} connections, {seconds} s each, transfers of 0.01 among {MEASURE_USERS} wallets")
    run("PgBouncer -> HAProxy -> leader, synchronous standby")
    synchronous(False)
    run("PgBouncer -> HAProxy -> leader, no synchronous standby")
    synchronous(True)
    direct = {"DATABASE_URL": cluster.direct_url, "DB_POOLER": "none"}
    beside = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{cluster.ports['haproxy_write_pooled']}/{DATABASE}"}
    for node in NODES:
        cluster.start_pgbouncer(node)
    for settings, label in (
        (direct, "HAProxy -> leader (no PgBouncer), synchronous standby"),
        (beside, "HAProxy -> PgBouncer beside the leader -> leader, synchronous standby"),
        ({}, ""),
    ):
        for host, _ in HOSTS:
            cluster.processes.kill(host, sig=signal.SIGTERM)
            cluster.start_host(host, **settings)
        if label:
            run(label)
    cluster.processes.kill(*(f"pgbouncer-{node}" for node in NODES), sig=signal.SIGTERM)
    cluster.write_description()


def status() -> None:
    processes = Processes()
    for name in processes.known:
        say(f"{name}: {'running' if processes.process(name) else 'gone'} (pid {processes.pid(name)})")
    cluster = Cluster()
    for member in cluster.members():
        say(f"{member['name']}: {member['role']} {member['state']} timeline {member.get('timeline')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status", "measure"))
    parser.add_argument("--seconds", type=int, default=10, help="measure: seconds of load per configuration")
    parser.add_argument("--connections", type=int, default=16, help="measure: wrk's connections")
    args = parser.parse_args(argv)
    if args.command == "measure":
        measure(args.seconds, args.connections)
    else:
        {"start": start, "stop": stop, "status": status}[args.command]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
