"""What every benchmark shares: interleaved timing with medians, peak memory of one call, and markdown tables.

The benchmarks run on machines whose load changes while they run (other processes, thermal limits), so no absolute
time is trusted alone: `interleave` times every candidate once per round, candidate after candidate, so that a
slow moment hits all of them alike, and the tables report medians over rounds and ratios measured in the same run.

Tables are printed in markdown. Every column whose header ends with "(x)" is a ratio (`ours/this (x)`,
`time/base (x)`, `achieved/peak (x)`, ...): a positive finite number, which is what `tests/test_benchmarks.py` checks.
"""

import argparse
import ctypes
import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

# glibc's mallopt parameter: allocations of at least this many bytes get their own mmap.
M_MMAP_THRESHOLD = -3


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark has: `--quick` (tiny models, seconds: for tests), rounds and threads."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few rounds: seconds, for tests")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per candidate after one warm-up round")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads: 2 (the shared dev machine's cores), 1 with --quick")
    return parser


def setup(args: argparse.Namespace, default_rounds: int, quick_rounds: int = 1) -> int:
    """Seed, thread count, and the number of rounds the options ask for.

    `--quick` runs one thread: its tiny ops would spend more time waiting for a second thread than computing on a
    loaded machine."""
    torch.manual_seed(0)
    args.threads = args.threads or (1 if args.quick else 2)
    torch.set_num_threads(args.threads)
    if args.rounds is not None and args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    return args.rounds or (quick_rounds if args.quick else default_rounds)


def machine_line(args: argparse.Namespace) -> str:
    """One line naming the machine and software, printed above every table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"machine: {cpu}, {os.cpu_count()} cores visible, {args.threads} torch threads; "
        f"torch {torch.__version__}{' (--quick)' if args.quick else ''}"
    )


def time_call(function: Callable[[], object], steps: int = 1) -> tuple[float, float]:
    """Wall and process-CPU seconds per call of `function`, averaged over `steps` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        function()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def interleave(
    candidates: dict[str, Callable[[], object]], rounds: int, steps: int = 1, warmup: int = 1
) -> dict[str, list[tuple[float, float]]]:
    """(wall, cpu) seconds per call of every candidate in each of `rounds` rounds; within a round the candidates run
    one after the other, in order, so that load from other processes hits each alike. `warmup` untimed rounds first."""
    for _ in range(warmup):
        for function in candidates.values():
            function()
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, function in candidates.items():
            times[name].append(time_call(function, steps))
    return times


def median_wall(times: list[tuple[float, float]]) -> float:
    return statistics.median(wall for wall, _ in times)


def median_cpu(times: list[tuple[float, float]]) -> float:
    return statistics.median(cpu for _, cpu in times)


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def exact_rss_available() -> bool:
    """Whether `peak_memory` can measure: Linux with a resettable peak RSS and glibc."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        ctypes.CDLL("libc.so.6")
        return True
    except OSError:
        return False


def peak_memory(function: Callable[[], object]) -> int:
    """Bytes by which the process's resident memory rose at its highest during one call of `function`.

    CPU tensors come from malloc, which neither tracemalloc nor `torch.cuda` sees, so this reads the kernel's RSS
    high-water mark (`VmHWM`, reset through `/proc/self/clear_refs`). To make freed tensors leave the RSS at once
    (so a call is not charged for, or helped by, memory an earlier one freed), allocations of 64 KiB and more are
    given their own mmap from here on (`mallopt(M_MMAP_THRESHOLD)`): call this after the timing rounds.
    """
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    gc.collect()
    libc.malloc_trim(0)
    before = _proc_status_bytes("VmRSS:")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    function()
    return max(0, _proc_status_bytes("VmHWM:") - before)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is 0 (the tests then fail loudly rather than divide)."""
    return numerator / denominator if denominator else math.nan


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """A markdown table under a `### title` line; floats with 3 significant digits (1 decimal from 100 up), so
    that ratios (headers ending with "(x)") print as plain numbers that parse."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append(f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}")
            else:
                cells.append(str(value))
        print("| " + " | ".join(cells) + " |")
