"""``index`` lists what it skipped, by kind (issue 18): files that are not images (by extension) as well
as image files that do not decode, with counts per kind in the report and on the command line."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from simages_server.cli import main as server_main
from simages_server.indexing import build_index


def _folder(root: Path) -> Path:
    images = root / "photos"
    (images / "trip").mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 20, 20)).save(images / "red.png")
    Image.new("RGB", (64, 48), (20, 200, 20)).save(images / "trip" / "green.jpg")
    (images / "notes.txt").write_text("not an image")
    (images / "trip" / "route.gpx").write_text("<gpx/>")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (images / ".hidden.txt").write_text("hidden files are not the user's photos")
    return images


def test_the_report_lists_skipped_files_by_kind(tmp_path):
    report = build_index(_folder(tmp_path), tmp_path / "index", progress=False)
    assert (report.added, report.total) == (2, 2)
    assert report.not_images == ("notes.txt", "trip/route.gpx")
    assert len(report.skipped) == 1 and report.skipped[0].startswith("broken.jpg: ")
    assert report.skipped_by_kind == {
        "not an image": ["notes.txt", "trip/route.gpx"],
        "unreadable": report.skipped,
    }
    assert report.skipped_count == 3
    again = build_index(tmp_path / "photos", tmp_path / "index", progress=False)  # every run says so
    assert again.not_images == report.not_images and again.skipped_count == 3


def test_the_command_line_counts_and_lists_each_kind(tmp_path, capsys):
    images = _folder(tmp_path)
    assert server_main(["index", str(images), "--out", str(tmp_path / "index")]) == 0
    out = capsys.readouterr().out
    assert "skipped 3 (2 not an image, 1 unreadable)" in out
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("skipped 2 file(s), not an image")))
    assert lines[start + 1 : start + 3] == ["  notes.txt", "  trip/route.gpx"]
    assert any(line.startswith("skipped 1 file(s), image files that could not be read") for line in lines)
    assert any(line.startswith("  broken.jpg: ") for line in lines)
    assert ".hidden.txt" not in out
