"""What the benchmarks read about processes from ``/proc`` (proc(5)): trees, CPU, memory.

CPU is counted per *group* of processes (the bridge, the bare app, PostgreSQL, Alertmanager)
from the group's root: the tree is walked again at every reading, so a process started
during a measurement (a new PostgreSQL backend) is counted, and one that ended is counted
through its parent's ``cutime``/``cstime`` (what the kernel adds to a parent when it reaps a
child: the postmaster reaps its backends). The difference of two readings is the group's
CPU in between.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

CLOCK_TICK = 100.0  # USER_HZ: /proc/<pid>/stat counts CPU time in these


def process_tree(pid: int) -> list[int]:
    """``pid`` and its living descendants."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(child) for child in task.read_text().split()]
        i += 1
    return pids


def _stat_cpu(pid: int) -> float:
    """utime + stime + cutime + cstime of one process, in seconds (0 once it is gone)."""
    try:
        # The command name (field 2) may hold spaces and parentheses: split after its ")".
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After ")": fields[0] is field 3 (state); utime, stime, cutime, cstime are 14 to 17.
    return sum(int(fields[n]) for n in (11, 12, 13, 14)) / CLOCK_TICK


def cpu_seconds(root: int) -> float:
    """CPU seconds used so far by ``root``'s tree, reaped descendants included."""
    return sum(_stat_cpu(pid) for pid in process_tree(root))


def group_cpu(roots: list[int]) -> float:
    return sum(cpu_seconds(root) for root in roots)


def wait_idle(roots: list[int], limit: float = 120.0) -> float:
    """Seconds until the groups use under 5 % of a core over half a second."""
    start = time.monotonic()
    before = group_cpu(roots)
    while time.monotonic() - start < limit:
        time.sleep(0.5)  # a sampling period, not a stand-in for a condition
        now = group_cpu(roots)
        if now - before < 0.025:
            return max(0.0, time.monotonic() - start - 0.5)
        before = now
    return limit


def _kib(path: Path, field: str) -> int:
    with contextlib.suppress(OSError):
        m = re.search(rf"^{field}:\s+(\d+) kB", path.read_text(), re.M)
        if m:
            return int(m.group(1))
    return 0


def memory_mib(root: int) -> dict[str, float]:
    """The tree's memory now: RSS summed (shared pages counted once per process), PSS
    summed (shared pages split between the processes: what the tree costs), and the
    peak RSS (``VmHWM``) summed."""
    pids = process_tree(root)
    return {
        "rss": sum(_kib(Path(f"/proc/{p}/status"), "VmRSS") for p in pids) / 1024,
        "pss": sum(_kib(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in pids) / 1024,
        "peak_rss": sum(_kib(Path(f"/proc/{p}/status"), "VmHWM") for p in pids) / 1024,
        "processes": len(pids),
    }


def pid_with_argument(argument: str) -> int | None:
    """The process whose command line holds ``argument`` exactly (e.g. Alertmanager's
    ``--web.listen-address=127.0.0.1:PORT``, which is unique per run)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if argument.encode() in cmdline.read_bytes().split(b"\0"):
                return int(cmdline.parent.name)
    return None
