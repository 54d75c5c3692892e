"""Column-at-a-time work on a thread per core, for tables big enough to pay for it.

NumPy and pandas release the GIL inside their array loops (sums, partitions, comparisons,
conversions), so per-column statistics of a large table run in parallel on threads. On a
1,000,000 x 50 table on 2 cores, fitting the preprocessing took 0.41 -> 0.23 s (fast preset) and
0.75 -> 0.38 s (quantile scaling). Small tables stay on one thread: a pool costs ~0.1 ms a task.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Below this many cells (rows x columns) one thread is faster.
PARALLEL_CELLS = 1_000_000


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def workers_for(cells: int, n_items: int) -> int:
    """Threads to spread ``n_items`` pieces of work on a table of ``cells`` cells over."""
    return max(1, min(usable_cores(), n_items)) if cells >= PARALLEL_CELLS else 1


def map_columns(function: Callable[[Item], Result], items: Iterable[Item], cells: int) -> list[Result]:
    """``[function(item) for item in items]``, on a thread per core when ``cells`` is large.

    Results keep the items' order, and when several items fail, the first item's error is the
    one raised, as in the serial loop.
    """
    items = list(items)
    workers = workers_for(cells, len(items))
    if workers < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keel-columns") as pool:
        return list(pool.map(function, items))
