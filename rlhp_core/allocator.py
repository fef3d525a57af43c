"""Run the command-line programs under tcmalloc, because glibc's malloc makes CPU training slow.

Why (results/speed/README.md, "The allocator"): a reward-model minibatch on Atari is 32
comparisons x 50 frames = 1,600 frames, so every activation of the first conv layer is a
~70 MB tensor. glibc serves any block above 32 MB with a fresh ``mmap`` and returns it with
``munmap`` when freed, so each forward and backward pass page-faults its way through
hundreds of MB of new memory. That was most of the cost of the memory-bound ops (widening the
uint8 frames, batch norm, dropout). tcmalloc keeps freed blocks for reuse. On the 2-core box it
halves the cost of a reward-model minibatch and makes the whole Enduro loop 1.7x faster, and
nothing in the arithmetic changes.

A preload must be in place before the process starts, so :func:`reexec_with_tcmalloc` restarts
the program once, with the same command line, with ``LD_PRELOAD`` pointing at tcmalloc
(Debian/Ubuntu: ``apt-get install libtcmalloc-minimal4``; scripts/setup.sh installs it). It is
called only from the ``__main__`` entry points (``python -m rlhp_core.train``, ``rlhp-train``,
``python -m bench.sweep``), never on import, so a library user or a test process is never
restarted. ``RLHP_MALLOC=system`` turns it off. Without tcmalloc on the machine, torch is asked
to put big blocks on transparent huge pages instead (``THP_MEM_ALLOC_ENABLE``). That gave 1.4x
on a minibatch here.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
    "/usr/local/lib/libtcmalloc_minimal.so.4",
)
MALLOC_SETTINGS = ("tcmalloc", "system")


def find_tcmalloc() -> str | None:
    """Path of a tcmalloc shared library on this machine, or None."""
    for path in _CANDIDATES:
        if Path(path).exists():
            return path
    # a bare soname is fine for LD_PRELOAD: the dynamic linker looks it up like any library
    return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


def active_allocator() -> str:
    """'tcmalloc' when it is loaded into this process, else 'glibc' (recorded with every result)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return "tcmalloc" if "tcmalloc" in maps else "glibc"


def reexec_with_tcmalloc() -> None:
    """Restart this program once under tcmalloc (or, without it, with torch's huge-page
    allocation), then carry on.

    Returns normally, with nothing changed, when tcmalloc is already loaded, when
    ``RLHP_MALLOC=system``, or when this process is the restarted one. Otherwise it does not
    return: the process image is replaced (``os.execve``) with the same interpreter and the same
    command line (``sys.orig_argv``), so nothing the program did before is lost.
    """
    setting = os.environ.get("RLHP_MALLOC", "tcmalloc")
    if setting not in MALLOC_SETTINGS:
        raise SystemExit(f"error: RLHP_MALLOC={setting!r} is not one of {MALLOC_SETTINGS}")
    if setting == "system" or os.environ.get("_RLHP_REEXECED") == "1" or active_allocator() == "tcmalloc":
        return
    env = dict(os.environ)
    env["_RLHP_REEXECED"] = "1"  # never loop, even if the preload silently fails
    lib = find_tcmalloc()
    if lib is not None:
        env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    elif "THP_MEM_ALLOC_ENABLE" in env:
        return
    else:
        env["THP_MEM_ALLOC_ENABLE"] = "1"  # torch reads it once, at its first allocation
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
