"""Unit tests of the plugin's pure modules: merging, validation, labels, downloads (no database)."""

from __future__ import annotations

import io
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from simages_core import Detection, SearchResult, SimilarImage
from simages_fiftyone._downloads import DownloadJob, DownloadPolicy, iter_downloads, safe_stem
from simages_fiftyone._outcomes import QueryLabel
from simages_fiftyone._param_errors import ParamError, form_input
from simages_fiftyone._params import build_params, check_classes, check_field_name, decode_upload
from simages_fiftyone._provenance import run_key, run_tag
from simages_fiftyone._ranking import ClassFilter, class_summary, merge_results
from simages_fiftyone._samples import to_detections


def img(i: str, score: float, url: str | None = None, dets=None, w=None, h=None) -> SimilarImage:
    return SimilarImage(url or f"http://x/images/{i}", score, f"http://x/t/{i}.webp", i, dets, w, h)


def test_merge_keeps_best_score_counts_hits_and_ranks():
    a, b = QueryLabel("sample", "a"), QueryLabel("sample", "b")
    merged = merge_results(
        [
            (a, SearchResult((img("1", 0.9), img("2", 0.5), img("3", 0.4)))),
            (b, SearchResult((img("2", 0.95), img("4", 0.4), img("3", 0.3)))),
        ]
    )
    assert [(m.image.id, m.rank, m.hits, str(m.query)) for m in merged] == [
        ("2", 1, 2, "sample:b"),
        ("1", 2, 1, "sample:a"),
        ("3", 3, 2, "sample:a"),  # tie at 0.4 with "4": found twice wins
        ("4", 4, 1, "sample:b"),
    ]


def test_merge_drops_a_second_id_for_the_same_source_url():
    merged = merge_results(
        [(QueryLabel("text", "t"), SearchResult((img("1", 0.9, "http://s/a"), img("2", 0.8, "http://s/a"))))]
    )
    assert [m.image.id for m in merged] == ["1"]


@pytest.mark.parametrize("value", [0, 51, -1, 2.5, "10", None, True, float("nan")])
def test_num_similar_out_of_range(value):
    # the core's rule (``Query``), reported on the form's num_similar input
    with pytest.raises(ParamError) as info:
        build_params(text="cat", num_similar=value)
    assert info.value.field == "num_similar"


@pytest.mark.parametrize("value", [1, 50, 10.0])
def test_num_similar_in_range(value):
    assert build_params(text="cat", num_similar=value).num_similar == int(value)


@pytest.mark.parametrize(
    "url", ["", "   ", "example.com/a.jpg", "ftp://h/a.jpg", "http://", "http://a b/c.jpg", None]
)
def test_bad_urls(url):
    with pytest.raises(ParamError) as info:
        build_params(source="url", url=url)
    assert info.value.field == "url" and "not an http(s) image URL" in info.value.message


def test_good_url_is_stripped():
    assert build_params(url="  https://example.com/a.jpg?x=1 ").url == "https://example.com/a.jpg?x=1"


@pytest.mark.parametrize(
    ("core_field", "source", "form"),
    [
        ("url", "url", "url"),
        ("text", "text", "text"),
        ("num_similar", "selected", "num_similar"),
        ("get_labels", "text", "labels"),
        ("image", "upload", "upload"),
        ("image", "selected", "selected"),
        ("url/image/text", "text", "text"),
        ("url/image/text", "current_sample", "current_sample"),
        (None, "url", "url"),
    ],
)
def test_core_fields_map_to_form_inputs(core_field, source, form):
    assert form_input(core_field, source) == form


def test_an_upload_that_is_not_an_image_is_refused_on_the_form():
    with pytest.raises(ParamError) as info:
        build_params(source="upload", image=b"definitely not an image")
    assert info.value.field == "upload" and "choose an image file" in info.value.message


def test_decode_upload_accepts_plain_and_data_url_base64():
    assert decode_upload("aGVsbG8=") == b"hello"
    assert decode_upload("data:image/png;base64,aGVsbG8=") == b"hello"
    with pytest.raises(ParamError):
        decode_upload("")


def test_field_names_and_classes():
    assert check_field_name(" ground_truth2 ") == "ground_truth2"
    for bad in ("", "a.b", "_x", "simages_id", "filepath", "a-b"):
        with pytest.raises(ParamError):
            check_field_name(bad)
    assert check_classes(["cat", " dog ", ""]) == frozenset({"cat", "dog"})
    assert check_classes("cat, dog") == frozenset({"cat", "dog"})
    assert check_classes([]) is None


def test_build_params_needs_exactly_one_source():
    with pytest.raises(ParamError, match="exactly one"):
        build_params(text="cat", url="http://x/a.jpg")
    with pytest.raises(ParamError, match="exactly one"):
        build_params()
    assert build_params(sample_ids="abc").sample_ids == ("abc",)
    with pytest.raises(ParamError, match="select one or more"):
        build_params(source="selected", sample_ids=[])


def test_run_tag_and_key():
    now = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=timezone.utc)
    assert run_tag(now) == "simages-20260102T030405.678Z"
    assert run_key(run_tag(now)) == "simages_20260102T030405_678Z"


def test_to_detections_relative_boxes_filter_and_rescale():
    dets = (
        Detection("cat", 0.9, (0, 0, 410, 300), 15),
        Detection("dog", 0.3, (10, 10, 20, 20), 16),
        Detection("cat", 0.8, (500, 500, 600, 600), 15),  # outside: dropped
    )
    image = img("1", 0.9, dets=dets, w=451, h=300)
    labels = to_detections(image, 451, 300)
    assert [d.label for d in labels.detections] == ["cat", "dog"]
    assert labels.detections[0].bounding_box == pytest.approx([0, 0, 410 / 451, 1.0], abs=1e-6)
    assert labels.detections[0].confidence == 0.9 and labels.detections[0].yolo_class_id == 15
    kept = to_detections(image, 451, 300, ClassFilter(frozenset({"cat", "dog"}), 0.5))
    assert [d.label for d in kept.detections] == ["cat"]
    half = to_detections(image, 225, 150)  # a file at half the reported size: same relative box
    assert half.detections[0].bounding_box == pytest.approx([0, 0, 410 / 451, 1.0], abs=1e-2)
    assert class_summary(image) == "cat 0.90, dog 0.30, cat 0.80"


def test_safe_stem():
    assert safe_stem("ab/../c d") == "ab____c_d"
    assert safe_stem("") == "image"


@pytest.fixture
def file_server():
    png = io.BytesIO()
    Image.new("RGB", (7, 5), "red").save(png, format="PNG")
    routes = {
        "/ok.png": (200, "image/png", png.getvalue()),
        "/big.png": (200, "image/png", png.getvalue() * 10),
        "/text": (200, "text/plain", b"hello"),
        "/flaky": (503, "text/plain", b"busy"),
        "/slow.png": (200, "image/png", png.getvalue()),
    }
    hits: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path == "/slow.png":
                time.sleep(0.5)
            status, ctype, body = routes.get(self.path, (404, "text/plain", b"no"))
            if self.path == "/flaky" and hits[self.path] >= 2:
                status, ctype, body = routes["/ok.png"]
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits, len(png.getvalue())
    server.shutdown()
    server.server_close()


def test_downloads_check_type_size_and_retry(file_server, tmp_path):
    base, hits, png_size = file_server
    jobs = [
        DownloadJob("ok", f"{base}/ok.png"),
        DownloadJob("big", f"{base}/big.png"),
        DownloadJob("text", f"{base}/text"),
        DownloadJob("missing", f"{base}/missing"),
        DownloadJob("flaky", f"{base}/flaky"),
        DownloadJob("refused", "http://127.0.0.1:9/nothing.png"),
    ]
    policy = DownloadPolicy(attempts=2, backoff=0.01, max_bytes=png_size * 2, connect_timeout=1)
    out = {o.job.key: o for o in iter_downloads(jobs, tmp_path, policy)}
    assert out["ok"].ok and (out["ok"].width, out["ok"].height) == (7, 5)
    assert out["ok"].path == tmp_path / "ok.png"
    assert out["flaky"].ok and hits["/flaky"] == 2  # 503 retried
    assert out["big"].error.startswith("too large")
    assert out["text"].error == "not an image (content-type 'text/plain')"
    assert out["missing"].error == "HTTP 404" and hits["/missing"] == 1
    assert out["refused"].error.startswith("connection failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flaky.png", "ok.png"]


def test_stopping_early_removes_files_the_caller_never_saw(file_server, tmp_path):
    base, hits, _ = file_server
    jobs = [DownloadJob("ok", f"{base}/ok.png"), DownloadJob("slow", f"{base}/slow.png")]
    downloads = iter_downloads(jobs, tmp_path, DownloadPolicy())
    first = next(downloads)
    assert first.job.key == "ok" and first.path.is_file()
    downloads.close()  # while "slow" is still downloading
    assert hits["/slow.png"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png"]  # the caller's file stays, no orphan


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_taken_name_gets_a_suffix_and_the_old_file_is_kept(file_server, tmp_path, monkeypatch, hard_links):
    base, _, _ = file_server
    if not hard_links:  # a filesystem without hard links (some network and FAT mounts)

        def no_links(src, dst):
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr("simages_fiftyone._downloads.os.link", no_links)
    (tmp_path / "ok.png").write_bytes(b"someone else's file")
    jobs = [DownloadJob("ok", f"{base}/ok.png"), DownloadJob("ok", f"{base}/ok.png")]
    out = list(iter_downloads(jobs, tmp_path, DownloadPolicy()))
    assert sorted(o.path.name for o in out) == ["ok-1.png", "ok-2.png"]
    assert (tmp_path / "ok.png").read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok-1.png", "ok-2.png", "ok.png"]  # no temp file


# --- copy screening (pure parts) ------------------------------------------------------------


def test_the_copy_screen_names_the_target_sample_or_the_accepted_candidate():
    import skimage.data  # real photos, in the wheel

    from simages_core.identity import CopyIndex, fingerprint
    from simages_fiftyone._screening import CopyScreen

    sample, new, other = (
        Image.fromarray(f()).convert("RGB")
        for f in (skimage.data.astronaut, skimage.data.coffee, skimage.data.camera)
    )
    screen = CopyScreen(CopyIndex(items=[("sample-1", fingerprint(sample))]))
    verdict = screen.check("cand-a", fingerprint(sample.resize((256, 256))))
    assert verdict is not None and (verdict.sample_id, verdict.image_id) == ("sample-1", None)
    assert screen.check("cand-b", fingerprint(new)) is None  # accepted: later copies of it are caught
    later = screen.check("cand-c", fingerprint(new.resize((300, 200))))
    assert later is not None and (later.sample_id, later.image_id) == (None, "cand-b")
    screen.added({"cand-b": "sample-2"}, {"cand-b": fingerprint(new)})
    again = screen.check("cand-d", fingerprint(new))
    assert again is not None and again.sample_id == "sample-2"  # a target sample now
    assert screen.check("cand-e", fingerprint(other)) is None


def test_screening_keeps_the_first_copy_and_screens_unprinted_downloads_from_their_file(tmp_path):
    from simages_core.identity import CopyIndex, fingerprint
    from simages_fiftyone._downloads import DownloadOutcome
    from simages_fiftyone._screening import CopyScreen, Screening

    photo = Image.effect_mandelbrot((128, 96), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
    fp = fingerprint(photo)
    screening = Screening(CopyScreen(CopyIndex()))
    assert screening.check("first", fp) and not screening.check("second", fp)  # in the caller's order
    assert screening.check("no-thumbnail", None) and screening.unprinted == ["no-thumbnail"]
    path = tmp_path / "downloaded.jpg"
    photo.resize((64, 48)).save(path)
    outcome = DownloadOutcome(DownloadJob("no-thumbnail", "http://x/i"), path=path, width=64, height=48)
    assert screening.screen_downloads([outcome]) == [] and not path.exists()  # a copy: its file goes at once
    screening.added({"first": "sample-9"})
    assert screening.resolved == {"second": "sample-9", "no-thumbnail": "sample-9"}
    assert set(screening.prints) == {"first"}


def test_screening_off_lets_everything_through():
    from simages_fiftyone._screening import Screening

    off = Screening()
    assert off.check("a", None) and off.unprinted == [] and off.screen_downloads([]) == []


def test_summary_line_counts_copies_apart():
    from simages_fiftyone._outcomes import summary_line

    assert summary_line(3, 2, 7, 1) == (
        "Imported 3; skipped: 7 copies of samples already in the dataset, 2 already imported; 1 download(s) failed"
    )
    assert summary_line(0, 0, 1, 0) == "Imported 0; skipped: 1 copy of samples already in the dataset"
    assert summary_line(5, 0, 0, 0) == "Imported 5"


@pytest.mark.parametrize(("value", "expected"), [(10.0, 10), (0, 0), (64, 64), (None, 10)])
def test_copy_threshold_from_a_form(value, expected):
    from simages_core.identity import COPY_DISTANCE
    from simages_fiftyone._params import check_copy_threshold

    assert check_copy_threshold(value) == (COPY_DISTANCE if value is None else expected)


@pytest.mark.parametrize("value", [65, -1, 2.5, "10", True])
def test_a_bad_copy_threshold_names_the_input(value):
    from simages_fiftyone._params import check_copy_threshold

    with pytest.raises(ParamError, match=r"^copy_threshold: "):
        check_copy_threshold(value)


# --- copy screening across overlapping batches -------------------------------------------------


def test_copy_screen_keeps_an_open_batch_while_the_one_before_settles() -> None:
    import random

    from simages_core.identity import CROPS, CopyIndex, Fingerprint
    from simages_fiftyone._screening import CopyScreen

    rng = random.Random(7)
    bits = 64 * len(CROPS)
    a, b, c = (Fingerprint(rng.getrandbits(bits), rng.getrandbits(bits)) for _ in range(3))
    screen = CopyScreen(CopyIndex(12))
    assert screen.check("a1", a) is None and screen.check("c1", c) is None  # batch 1 accepts a1, c1
    assert screen.check("b1", b) is None  # batch 2 is screened before batch 1 is added
    assert screen.check("a2", a).image_id == "a1"  # a copy of batch 1's pending a1
    # Batch 1 settles: a1 went in, c1's download failed.
    screen.added({"a1": "sample-a"}, {"a1": a, "c1": c})
    assert screen.check("b2", b).image_id == "b1"  # batch 2's b1 is still pending: still found
    assert screen.check("a3", a).sample_id == "sample-a"  # a1 is a target sample now
    assert screen.check("c2", c) is None  # c1 never went in: a later copy of it is new


def test_a_candidate_accepted_before_the_target_was_complete_is_checked_again(tmp_path) -> None:
    import random

    from simages_core.identity import CROPS, CopyIndex, Fingerprint
    from simages_fiftyone._downloads import DownloadOutcome
    from simages_fiftyone._screening import CopyScreen, Screening

    rng = random.Random(11)
    photo = Fingerprint(rng.getrandbits(64 * len(CROPS)), rng.getrandbits(64 * len(CROPS)))
    target, complete = CopyIndex(12), [False]
    screen = CopyScreen(target, lambda: complete[0])
    early, later = Screening(screen), Screening(screen)
    assert early.check("early", photo) and early.provisional == ["early"]  # the target's sample not in yet
    assert not later.check("its-copy", photo)  # a copy of the accepted candidate
    target.add("sample-a", photo)  # the target's fingerprints are all in
    complete[0] = True
    path = tmp_path / "early.jpg"
    path.write_bytes(b"downloaded")
    outcome = DownloadOutcome(DownloadJob("early", "http://x/i"), path=path, width=1, height=1)
    assert early.screen_downloads([outcome]) == [] and not path.exists()  # caught before it is added
    early.added({})
    later.added({})
    assert early.resolved == {"early": "sample-a"} and later.resolved == {"its-copy": "sample-a"}
    assert Screening(screen).check("after", photo) is False and Screening(screen).provisional == []
