"""The wheel installs one top-level package, ``emostream``: nothing named models, train, streamer or benchmarks."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_holds_only_the_emostream_package(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("emostream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"emostream"}, sorted(top)
    for module in ("models/cli.py", "streamer/cli/live.py", "train/cli.py", "benchmarks/__main__.py"):
        assert f"emostream/{module}" in names
    static = REPO / "streamer" / "server" / "static"
    for page_file in sorted(p.name for p in static.iterdir()):  # the browser page, served by `emostream serve`
        assert f"emostream/streamer/server/static/{page_file}" in names, page_file
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "emostream = emostream.models.cli:main" in text
    assert "live = emostream.streamer.cli.live:register_live" in text
