"""Keep glibc's allocator from holding on to memory the connector has freed, without slowing it down.

Bodies pass through in blocks of a few hundred kB. By default glibc serves such blocks from mmap at
first, raises its mmap threshold each time one is freed (up to 32 MB), then serves them from the heap
of the allocating thread's arena, and keeps a freed heap top of up to twice the threshold per arena.
With download, reader and main threads each on an arena, the main process peaked at ~110 MB RSS on
the benchmark. Fixed thresholds (512 kB for mmap, 1 MB for trimming) and one arena brought it to
80-90 MB, and the benchmark ran faster, not slower (1.65 s -> 1.5 s; with thresholds of 256 kB or
128 kB, so that most blocks are mmapped and faulted in afresh, it took 1.7-1.9 s). The same as
MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ and MALLOC_ARENA_MAX in the environment, which would
have to be set before the process starts. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1 << 19
TRIM_THRESHOLD_BYTES = 1 << 20
ARENAS = 1


def keep_heap_small() -> bool:
    """Set glibc's thresholds and arena count (see the module docstring); whether that was possible."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        mallopt = ctypes.CDLL(None).mallopt  # the running program's symbols, libc's among them
        return all(
            mallopt(option, value)
            for option, value in (
                (_M_ARENA_MAX, ARENAS),
                (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
            )
        )
    return False
