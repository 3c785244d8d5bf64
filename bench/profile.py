"""Where a transfer's time goes: py-spy samples of the server, summed by function and by package, and the CPU
that the server, its database backends and the rest of the machine used meanwhile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.seed import query

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_OURS = ("wallet", "handlers", "models", "server.py", "settings.py")


def _package(path: str) -> str:
    """py-spy names files relative to their sys.path entry: the first part is the package (or a stdlib module)."""
    top = path.split("/", 1)[0]
    if top in _OURS:
        return f"ours: {top}"
    return top if "/" in path else "stdlib modules"


def cpu_ticks(pids: list[int]) -> int:
    """User and system CPU the processes used so far, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def rss_mib(pids: list[int]) -> list[float]:
    """Each process's resident set size now (VmRSS), in MiB; 0 for one that has exited."""
    sizes = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            sizes.append(0.0)
            continue
        kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
        sizes.append(int(kib) / 1024)
    return sizes


def process_tree(pid: int) -> list[int]:
    """A process and its children (the workers of `server.py --processes N`)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(child) for child in children)]


def _machine_ticks() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)  # busy (all but idle and iowait), all


def backends(database_url: str) -> list[int]:
    """The PostgreSQL backends serving the bench database now."""
    sql = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    return [pid for (pid,) in query(database_url, sql)]


def summarize(raw: str, top: int = 15) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            if match:
                frames.append((f"{match['function']} ({match['file']})", match["file"]))
        if not frames:
            continue
        n = int(count)
        total += n
        own[frames[-1][0]] += n
        packages[_package(frames[-1][1])] += n
        for name in {name for name, _ in frames}:
            inclusive[name] += n
    pct = lambda n: f"{100 * n / max(total, 1):5.1f}%"  # noqa: E731
    lines = [f"py-spy: {total} samples of the busy server (idle time in epoll not sampled)", "self time by package:"]
    lines += [f"  {pct(n)}  {name}" for name, n in packages.most_common()]
    lines += ["top frames by self time:"] + [f"  {pct(n)}  {name}" for name, n in own.most_common(top)]
    ours = [(name, n) for name, n in inclusive.most_common() if name.split("(", 1)[1].startswith(_OURS[:2])]
    lines += ["our functions by inclusive time:"] + [f"  {pct(n)}  {name}" for name, n in ours[:top]]
    return "\n".join(lines)


def record(pid: int, database_url: str, seconds: float, out: Path) -> str:
    """Sample the server `pid` for `seconds` while load runs into `out` (py-spy's raw collapsed stacks); return the
    CPU split and the summary."""
    time.sleep(1)  # let the load reach its steady state
    db = backends(database_url)
    before = (cpu_ticks([pid]), cpu_ticks(db), _machine_ticks())
    spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--rate", "200"]
    spy += ["--duration", str(int(seconds)), "--format", "raw", "--nonblocking", "--output", str(out)]
    subprocess.run(spy, check=True, capture_output=True)
    server, backend, (busy, everything) = cpu_ticks([pid]), cpu_ticks(db), _machine_ticks()
    hz, cores = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
    wall = (everything - before[2][1]) / cores / hz
    cpu = lambda ticks: f"{100 * ticks / hz / wall:.0f}%"  # noqa: E731
    busy_ticks = busy - before[2][0]
    split = (
        f"CPU over {wall:.1f} s (100% = one core, {cores} cores): server process {cpu(server - before[0])}, "
        f"its {len(db)} PostgreSQL backends {cpu(backend - before[1])}, everything else (wrk, redis, "
        f"other work on the machine) {cpu(busy_ticks - (server - before[0]) - (backend - before[1]))}"
    )
    return split + "\n" + summarize(out.read_text())
