"""The command-line programs restart once under tcmalloc; library use never restarts anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhp_core import allocator

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "_RLHP_REEXECED", "RLHP_MALLOC")}
    env.update(extra)
    return env


def _run(code: str, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(**extra), capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(allocator.find_tcmalloc() is None, reason="tcmalloc is not installed (apt-get install libtcmalloc-minimal4)")
def test_entry_point_restarts_under_tcmalloc_with_the_same_arguments():
    code = ("import sys; from rlhp_core.allocator import reexec_with_tcmalloc, active_allocator; "
            "print('start', flush=True); reexec_with_tcmalloc(); print(active_allocator(), sys.argv[1:])")
    out = subprocess.run([sys.executable, "-c", code, "--a", "b c"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # the first process printed 'start' and was replaced; the second printed it again, then ran on
    assert out.stdout.split("\n") == ["start", "start", "tcmalloc ['--a', 'b c']", ""]


def test_plain_process_keeps_glibc_and_library_import_restarts_nothing():
    out = _run("import rlhp_core.train, rlhp_core.allocator as a; print(a.active_allocator())")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "glibc"


def test_opt_out_and_bad_setting():
    code = "from rlhp_core.allocator import reexec_with_tcmalloc as r, active_allocator as a; r(); print(a())"
    out = _run(code, RLHP_MALLOC="system")
    assert out.returncode == 0 and out.stdout.strip() == "glibc", out.stderr
    bad = _run(code, RLHP_MALLOC="jemalloc")
    assert bad.returncode != 0
    assert "RLHP_MALLOC='jemalloc' is not one of ('tcmalloc', 'system')" in bad.stderr


def test_without_tcmalloc_torch_gets_huge_pages():
    code = ("import os, rlhp_core.allocator as a; a.find_tcmalloc = lambda: None; a.reexec_with_tcmalloc(); "
            "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), os.environ.get('_RLHP_REEXECED'), a.active_allocator())")
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1 1 glibc"
