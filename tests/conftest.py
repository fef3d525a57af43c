"""Fixtures shared by every layer: one torch thread (CI has 2 cores shared with the emulator), an
rng, a run directory, and Chromium for the browser tests. Plain helpers live in tests/helpers/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.human import CHROMIUM, CHROMIUM_ARGS

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """An empty run directory (the labeling page's and the learner's tests share it)."""
    d = tmp_path / "run"
    d.mkdir()
    return d


# -- Chromium through Playwright (the labeling page's browser tests) -------------------------------
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (apt-get install chromium) : browser tests skipped")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text
          else None)
    pg.errors = errors
    yield pg
    ctx.close()
