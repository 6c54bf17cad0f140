"""Where task images come from: Label Studio-hosted or not, sizes from headers, clear errors."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from simages_label_studio.task_images import (
    LabelStudioToken,
    TaskImageError,
    TaskImageResolver,
    displayed_size,
    image_ref,
)

LS = "http://label-studio.example:8080"


@pytest.mark.parametrize(
    ("ref", "hosted"),
    [
        ("/data/upload/3/abc-cat.jpg", True),
        ("/data/local-files/?d=photos/cat.jpg", True),
        ("s3://bucket/cat.jpg", True),
        ("gs://bucket/cat.jpg", True),
        ("azure-blob://container/cat.jpg", True),
        (f"{LS}/data/upload/3/abc-cat.jpg", True),
        ("https://images.example.com/cat.jpg", False),
        ("http://label-studio.example:9999/cat.jpg", False),  # another port is another host
    ],
)
def test_which_images_label_studio_hosts(ref, hosted):
    assert TaskImageResolver(LS, "token").is_hosted_by_label_studio(ref) is hosted


def test_urls_go_to_the_api_as_they_are_and_other_schemes_are_refused():
    resolver = TaskImageResolver(None, None)
    assert resolver.resolve("https://images.example.com/cat.jpg", 1, need_size=True).url == (
        "https://images.example.com/cat.jpg"
    )
    with pytest.raises(TaskImageError, match="neither an http"):
        resolver.resolve("ftp://example.com/cat.jpg", 1, need_size=False)
    with pytest.raises(TaskImageError, match="set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"):
        resolver.resolve("/data/upload/1/cat.jpg", 1, need_size=False)


def test_image_ref_names_the_missing_key():
    assert image_ref({"id": 1, "data": {"image": " http://x/a.jpg "}}, "image") == "http://x/a.jpg"
    for task in ({"id": 1, "data": {}}, {"id": 1, "data": {"image": ""}}, {"id": 1}, {"data": {"image": 3}}):
        with pytest.raises(TaskImageError, match=r"no image in data\['image'\]"):
            image_ref(task, "image")


def test_displayed_size_follows_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: browsers show it 200 wide, 300 high
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buffer, format="JPEG", exif=exif)
    with Image.open(buffer) as rotated:
        assert displayed_size(rotated) == (200, 300)
    assert displayed_size(Image.new("RGB", (300, 200))) == (300, 200)


def test_probe_reads_the_size_from_the_first_bytes(static_images):
    base, folder = static_images
    Image.new("RGB", (1234, 567), "teal").save(folder / "probe.jpg", quality=95)
    (folder / "probe.txt").write_text("not an image at all " * 100)
    (folder / "probe_truncated.jpg").write_bytes((folder / "probe.jpg").read_bytes()[:40])
    resolver = TaskImageResolver(None, None, timeout=5, allow_networks=("127.0.0.0/8",))
    assert resolver.probe_size(f"{base}/probe.jpg") == (1234, 567)
    with pytest.raises(TaskImageError, match="answered 404"):
        resolver.probe_size(f"{base}/missing.jpg")
    with pytest.raises(TaskImageError, match="not"):
        resolver.probe_size(f"{base}/probe.txt")
    with pytest.raises(TaskImageError, match="not a readable image"):
        resolver.probe_size(f"{base}/probe_truncated.jpg")
    with pytest.raises(TaskImageError, match="cannot fetch"):
        resolver.probe_size("http://127.0.0.1:9/closed-port.jpg")


def test_a_legacy_token_is_used_as_it_is_and_never_shown():
    token = LabelStudioToken(LS, "0123456789abcdef")
    assert token.current() == "0123456789abcdef"
    assert "0123456789abcdef" not in repr(token) + repr(TaskImageResolver(LS, "0123456789abcdef"))
