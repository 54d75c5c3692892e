"""bench/RESULTS.md holds one section per benchmark script; each script rewrites only its own."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Replace section ``name`` of ``path`` with ``text`` (appending it when absent), keeping the others."""
    block = f"<!-- section:{name} -->\n{text.strip()}\n<!-- /section:{name} -->\n"
    current = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"<!-- section:{re.escape(name)} -->.*?<!-- /section:{re.escape(name)} -->\n?", re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current.rstrip("\n") + ("\n\n" if current.strip() else "") + block
    path.write_text(updated)


def machine() -> str:
    """The CPU a timing was taken on, as a label: its model name, the cores this process may use, and the
    instruction sets that change which matmul kernels run (AMX, AVX-512, AVX2). A timing is comparable only with
    timings taken on the same label: the same keel trains in bfloat16 on an AMX CPU and in float32 on one without,
    so a reference measured on one machine and today's run on another says nothing about today's code."""
    import os
    import platform

    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name == (platform.processor() or platform.machine()):
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:  # not Linux: the model name alone
        pass
    isa = next((label for flag, label in (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
                if flag in flags), "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores" + (f", {isa}" if isa else "")
