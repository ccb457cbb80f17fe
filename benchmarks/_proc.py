"""Measuring another process (Linux): CPU time to the nanosecond, instruction counts
from ``perf stat`` where the machine exposes them, and CPU pinning. Shared by the
serving benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of all the process's threads, to the nanosecond
    (``schedstat``; the tick-based ``/proc/PID/stat`` is 10 ms coarse)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return total / 1e9


def perf_usable() -> bool:
    """Whether ``perf stat`` can count this machine's instructions (not every VM
    exposes the hardware counters)."""
    if shutil.which("perf") is None:
        return False
    proc = subprocess.run(
        ["perf", "stat", "-x,", "-e", "instructions", "true"], capture_output=True, text=True
    )
    return proc.returncode == 0 and "<not supported>" not in proc.stderr


def pin(cpu: int) -> list[str]:
    """A command prefix running a program on CPU ``cpu`` (nothing on one CPU)."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


class Counter:
    """CPU time and, with ``count``, instructions (user + kernel, from ``perf stat``)
    of some processes from now until :meth:`stop`. On a shared VM, CPU time moves by
    tens of percent between runs for the same instructions; the count does not."""

    def __init__(self, pids: list[int], count: bool) -> None:
        self.pids = pids
        self.perf = [
            subprocess.Popen(
                ["perf", "stat", "-x,", "-e", "instructions", "-p", str(pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for pid in (pids if count else [])
        ]
        if self.perf:
            time.sleep(0.2)  # attached
        self.cpu0 = [cpu_seconds(pid) for pid in pids]

    def stop(self) -> tuple[list[float], list[float | None]]:
        """CPU seconds and instructions (``None`` where not counted) per process."""
        cpu = [cpu_seconds(pid) - c0 for pid, c0 in zip(self.pids, self.cpu0, strict=True)]
        instructions: list[float | None] = [None] * len(self.pids)
        for i, proc in enumerate(self.perf):
            proc.send_signal(signal.SIGINT)
            _, report = proc.communicate()
            for line in report.splitlines():
                fields = line.split(",")
                if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
                    instructions[i] = float(fields[0])
        return cpu, instructions
