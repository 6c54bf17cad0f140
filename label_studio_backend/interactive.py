"""Interactive pre-annotation: label the rectangle (or keypoint) an annotator just drew.

With a smart tool (``<RectangleLabels smart="true">``) and Auto-Annotation on, Label Studio sends
``/predict`` with one task and the drawn regions in ``params.context.result``. Each region is cut
from the task image (in the image's own pixels, widened by ``SIMAGES_REGION_MARGIN``), searched
with one API call (labels on, top-k), and answered as the *same* region (same id and coordinates,
so Label Studio replaces the drawn one) with the label its similar images vote for
(``region_votes``) and that label's vote share as ``score``.

When no label reaches ``SIMAGES_REGION_THRESHOLD`` the region comes back unlabelled, with a note in
``meta.text`` saying so (and which label came closest): the annotator sees their box kept, with
the reason, instead of a guess (label_studio_backend/README.md, "Labelling a drawn box").

An annotator draws several boxes on one task, so the task image is downloaded once and kept,
decoded, in a small cache bounded by bytes (``SIMAGES_REGION_IMAGE_CACHE_MB``).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from PIL import Image

from simages_core import BatchItem, ImageEncodingError, Query, SimilarImage, open_image
from simages_core.crops import crop_box, crop_point

from .context import BackendContext, model_version_for, project_key, raise_if_account_error
from .learned_labels import Evidence
from .learned_store import LearnedStoreError
from .model import SimilarImagesBackend
from .predictions import prediction
from .region_controls import RegionControl, region_controls
from .region_memo_store import MemoStoreError
from .region_memos import RegionMemo, memo_of, region_box
from .region_votes import RegionVote, vote_region
from .task_images import TaskImageError, image_ref
from .wire import DrawnRegion, InteractiveContext

logger = logging.getLogger("simages_label_studio")

_CONFIGS_KEPT = 32
_SEARCHES_KEPT = 1024
_LABEL_KEYS = {"rectangle": "rectanglelabels", "keypoint": "keypointlabels"}
# A keypoint also carries the generic ``labels``; the answer replaces every label key it came with.
_ALL_LABEL_KEYS = ("rectanglelabels", "keypointlabels", "labels")


class TaskImageCache:
    """Decoded task images by reference, least recently used dropped first, bounded by bytes.

    Concurrent requests for one image wait for a single download (the second box of a task must
    not fetch the image again while the first is still fetching it).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.downloads = 0
        self._images: OrderedDict[str, Image.Image] = OrderedDict()
        self._bytes = 0
        self._pending: dict[str, Future[Image.Image]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], Image.Image]) -> Image.Image:
        with self._lock:
            image = self._images.get(key)
            if image is not None:
                self._images.move_to_end(key)
                return image
            pending = self._pending.get(key)
            owner = pending is None
            if pending is None:
                pending = self._pending[key] = Future()
                self.downloads += 1
        if not owner:
            return pending.result()
        try:
            image = load()
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._pending.pop(key, None)
        self._keep(key, image)
        pending.set_result(image)
        return image

    def _keep(self, key: str, image: Image.Image) -> None:
        size = image.width * image.height * len(image.getbands())
        with self._lock:
            if size > self.max_bytes:
                return
            self._images[key] = image
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._images.popitem(last=False)
                self._bytes -= dropped.width * dropped.height * len(dropped.getbands())


@dataclass
class _Region:
    drawn: DrawnRegion
    control: RegionControl | None = None
    search: Future[BatchItem] | None = None
    error: str | None = None


class RegionLabeller:
    """Answers interactive ``/predict`` calls: one API search per drawn region."""

    def __init__(self, context: BackendContext) -> None:
        self.context = context
        self.images = TaskImageCache(context.settings.region_image_cache_mb * 1024 * 1024)
        self._controls: OrderedDict[str, dict[str, RegionControl]] = OrderedDict()
        self._searches: OrderedDict[tuple[Any, ...], Future[BatchItem]] = OrderedDict()
        self._lock = threading.Lock()
        self._memo_warned = False

    def predict_tasks(
        self,
        model: SimilarImagesBackend,
        tasks: list[dict[str, Any]],
        drawn: InteractiveContext,
        project: object = None,
    ) -> list[dict[str, Any]]:
        """One answer per task (Label Studio sends one): its drawn regions, labelled.

        ``project`` (Label Studio's ``"7.1712345678"``) picks the learned labels and the version
        the answer carries, as for ``/predict`` without a context.
        """
        config = model.label_config or ""
        with self._lock:
            controls = self._controls.get(config)
            if controls is None:
                controls = region_controls(model.schema, config, self.context.settings.label_map)
                self._controls[config] = controls
                while len(self._controls) > _CONFIGS_KEPT:
                    self._controls.popitem(last=False)
            self._controls.move_to_end(config)
        if project is None and tasks:
            project = tasks[0].get("project")
        key = project_key(project)
        learned = self.context.evidence(key)
        version = model_version_for(model.schema, self.context.client.base_url, learned)
        return [self.predict(task, drawn, controls, version, learned, key) for task in tasks]

    def predict(
        self,
        task: dict[str, Any],
        drawn: InteractiveContext,
        controls: dict[str, RegionControl],
        model_version: str,
        learned: Evidence,
        project: str | None = None,
    ) -> dict[str, Any]:
        """The task's answer: the drawn regions, labelled; or ``{"error": ...}`` when none could be."""
        regions = [_Region(r, controls.get(r.from_name)) for r in drawn.regions]
        for region in regions:
            if region.control is None:
                region.error = (
                    f"{region.drawn.from_name!r} is not a RectangleLabels or KeyPointLabels on an <Image>"
                )
            elif region.control.shape != region.drawn.shape:
                region.error = f"a {region.drawn.shape} cannot be labelled by {region.control.from_name!r}"
            else:
                self._start_search(task, region)
        items = [(r, r.search.result()) for r in regions if r.search is not None]
        failed_searches = {id(r.search) for r, item in items if item.error is not None}
        if failed_searches:
            with self._lock:  # a failed search is tried again with the next request
                self._searches = OrderedDict(
                    (k, f) for k, f in self._searches.items() if id(f) not in failed_searches
                )
        raise_if_account_error([item.error for _, item in items] if len(items) == len(regions) else [])
        answers: list[dict[str, Any]] = []
        memos: list[RegionMemo] = []
        settings = self.context.settings
        for region, item in items:
            if item.error is not None:
                region.error = f"the search failed: {item.error}"
                continue
            assert item.result is not None and region.control is not None
            control = region.control
            vote = vote_region(
                item.result.images,
                control.with_learned(learned.control(control.from_name), settings.choice_threshold),
                threshold=settings.region_threshold,
                top_k=settings.top_k,
                min_detection_score=settings.min_detection_score,
            )
            answers.append(answer(region.drawn, vote, settings.region_threshold))
            memos += self._memo(region.drawn, control, item.result.images)
        self._remember(project, task, memos)
        failed = [f"region {r.drawn.id}: {r.error}" for r in regions if r.error is not None]
        for message in failed:
            logger.warning("task %s: %s", task.get("id"), self.context.redact(message))
        if failed and not answers:
            return {
                "error": self.context.redact(f"task {task.get('id')}: {'; '.join(failed)}"),
                "model_version": model_version,
            }
        return prediction(answers, model_version)

    def _memo(
        self, drawn: DrawnRegion, control: RegionControl, images: Sequence[SimilarImage]
    ) -> list[RegionMemo]:
        """What this answered region will teach when its task's annotation arrives (``region_memos``)."""
        settings = self.context.settings
        size = (drawn.original_width, drawn.original_height)
        box = region_box(drawn.shape, drawn.raw["value"], size, settings.region_point_window)
        if box is None:
            return []
        memo = memo_of(
            drawn.id,
            drawn.from_name,
            drawn.shape,
            box,
            size,
            images,
            control.label_for,
            top_k=settings.top_k,
            min_detection_score=settings.min_detection_score,
        )
        return [memo] if memo is not None else []

    def _remember(self, project: str | None, task: dict[str, Any], memos: list[RegionMemo]) -> None:
        """Keep the memos for the task's annotation; a store that fails costs only that lesson."""
        task_id = task.get("id")
        if not memos or project is None or isinstance(task_id, bool) or not isinstance(task_id, int):
            return
        try:
            self.context.learned_store().memos().remember(project, task_id, memos)
        except (LearnedStoreError, MemoStoreError) as exc:
            level = logging.DEBUG if self._memo_warned else logging.WARNING
            self._memo_warned = True
            logger.log(level, "answered regions not remembered: %s", self.context.redact(str(exc)))

    def _start_search(self, task: dict[str, Any], region: _Region) -> None:
        assert region.control is not None
        ctx, drawn = self.context, region.drawn
        try:
            ref = image_ref(task, region.control.value_key)
            # Label Studio sends every unaccepted drawn region of a label again with the next one:
            # a region already searched is not searched twice.
            key = (ref, drawn.shape, drawn.x, drawn.y, drawn.width, drawn.height, drawn.rotation)
            with self._lock:
                region.search = self._searches.get(key)
            if region.search is not None:
                return
            image = self.images.get(ref, lambda: open_image(ctx.resolver.fetch_image(ref, task.get("id"))))
            if drawn.shape == "keypoint":
                x, y = drawn.x * image.width / 100, drawn.y * image.height / 100
                crop = crop_point(image, x, y, fraction=ctx.settings.region_point_window)
            else:
                crop = crop_box(image, pixel_box(drawn, image.size), margin=ctx.settings.region_margin)
        except TaskImageError as exc:
            region.error = exc.public_message
            return
        except ImageEncodingError as exc:
            region.error = str(exc)
            return
        except Exception:
            # A bug or an unforeseen library error stays with its region: logged once, with its traceback.
            logger.exception("task %s: unexpected error while cutting region %s", task.get("id"), drawn.id)
            region.error = "unexpected error while cutting the region (the backend's log has the details)"
            return
        query = Query(image=crop.image, num_similar=ctx.settings.top_k, labels=True)
        region.search = ctx.submit_search(query)
        with self._lock:
            self._searches[key] = region.search
            while len(self._searches) > _SEARCHES_KEPT:
                self._searches.popitem(last=False)


def pixel_box(drawn: DrawnRegion, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A drawn rectangle in pixels of the image: Label Studio's percent of the image it shows.

    A rotated rectangle turns around its top-left corner; its axis-aligned bounding box is cropped.
    """
    width, height = size
    x0, y0 = drawn.x * width / 100, drawn.y * height / 100
    w, h = drawn.width * width / 100, drawn.height * height / 100
    if not drawn.rotation:
        return (x0, y0, x0 + w, y0 + h)
    angle = math.radians(drawn.rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [
        (x0 + dx * cos - dy * sin, y0 + dx * sin + dy * cos) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))
    ]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return (min(xs), min(ys), max(xs), max(ys))


def answer(drawn: DrawnRegion, vote: RegionVote, threshold: float) -> dict[str, Any]:
    """The drawn region as it came, with the voted label, or unlabelled with a note saying why."""
    labels_key = _LABEL_KEYS[drawn.shape]
    value = {k: v for k, v in drawn.raw["value"].items() if k not in _ALL_LABEL_KEYS}
    region: dict[str, Any] = {
        "id": drawn.id,
        "from_name": drawn.from_name,
        "to_name": drawn.to_name,
        "type": labels_key,
        "original_width": drawn.original_width,
        "original_height": drawn.original_height,
        "image_rotation": drawn.raw.get("image_rotation", 0),
        "value": {**value, labels_key: [vote.label] if vote.label else []},
        "score": vote.share,
    }
    if vote.label is None:
        region["meta"] = {"text": [no_label_note(vote, threshold)]}
    return region


def no_label_note(vote: RegionVote, threshold: float) -> str:
    if vote.runner_up is None:
        return "Similar Images: no similar image shows an object this project labels"
    return (
        f"Similar Images: no label reached {threshold:.0%} of the vote "
        f"(closest: {vote.runner_up} at {vote.share:.0%})"
    )
