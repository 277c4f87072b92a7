"""The wheel installs one top-level package, ``emostream``: nothing named models, train, streamer or benchmarks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def source_copy(dest: Path) -> Path:
    """The project's files (tracked, and new ones git does not ignore) copied to ``dest``, symlinks kept, so
    building the wheel leaves no ``build/`` or ``*.egg-info`` in the checkout. The checkout itself where git
    cannot list its files."""
    if shutil.which("git") is None:
        return REPO
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
    )
    if listed.returncode != 0:
        return REPO
    for name in filter(None, listed.stdout.decode().split("\0")):
        src, out = REPO / name, dest / name
        if not src.is_symlink() and not src.is_file():  # listed but deleted in the working tree
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out, follow_symlinks=False)
    return dest


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_holds_only_the_emostream_package(tmp_path: Path) -> None:
    source = source_copy(tmp_path / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
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
