"""End to end in headless Chromium: the reports load without console errors, every chart is
in the rendered DOM, and the screenshot is not blank.

Skipped when ``chromium`` is not installed, except in CI (env ``CI`` set), where it fails:
CI installs Debian's chromium.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gradvet.html import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--hide-scrollbars"]


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must `apt-get install -y chromium`")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return CHROMIUM


def _run(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [chromium, *_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _check_page(chromium: str, page: Path, tmp: Path, shot: Path, height: int) -> str:
    url = page.resolve().as_uri()
    dom = _run(chromium, tmp, "--dump-dom", "--enable-logging=stderr", "--v=0", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for bad in ("Uncaught", "ERROR:CONSOLE", "Failed to load resource"):
        assert bad not in dom.stderr, dom.stderr[-2000:]
    shot_run = _run(chromium, tmp, f"--screenshot={shot}", f"--window-size=1280,{height}", url)
    assert shot_run.returncode == 0 and shot.is_file(), shot_run.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (height, 1280)
    assert pixels.std() > 10  # charts and text, not a blank page
    return dom.stdout


def _rendered_charts(dom: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r'data-chart="([^"]+)" data-points="(\d+)"', dom)}


@pytest.mark.timeout(300)
def test_run_report_renders_in_chromium(chromium: str, mixed_record: Path, tmp_path: Path) -> None:
    page = write_report(mixed_record, tmp_path / "report.html")
    dom = _check_page(chromium, page, tmp_path, tmp_path / "report.png", 2400)
    charts = _rendered_charts(dom)
    assert len(charts) == 7 and all(n > 0 for n in charts.values())
    assert dom.count("<svg") == 7 and 'id="findings"' in dom


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lab_page_renders_in_chromium(chromium: str, quick_lab: tuple[Path, dict, float], tmp_path: Path) -> None:
    dom = _check_page(chromium, quick_lab[0], tmp_path, tmp_path / "lab.png", 2400)
    charts = _rendered_charts(dom)
    assert len(charts) >= 20 and all(n > 0 for n in charts.values())
