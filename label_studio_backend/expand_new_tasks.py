"""The tasks ``expand`` makes: a similar image's data (with its provenance) and its own prediction."""

from __future__ import annotations

from typing import Any

from simages_core import SimilarImage
from simages_core.identity import Fingerprint

from .expand_tasks import SOURCE_TASK_KEY
from .label_config import ImageTarget
from .predictions import Thresholds, choices_region, own_rectangle_regions, prediction, vote_choices
from .task_fingerprints import FINGERPRINT_KEY


def new_task_data(
    target: ImageTarget,
    image: SimilarImage,
    source_task_id: int,
    rank: int,
    when: str,
    fp: Fingerprint | None,
) -> dict[str, Any]:
    data = {
        target.value_key: image.url,
        "simages_id": image.id,
        "simages_score": round(image.score, 6),
        "simages_rank": rank,
        SOURCE_TASK_KEY: source_task_id,
        "simages_thumbnail_url": image.thumbnail_url,
        "simages_imported_at": when,
    }
    if fp is not None:  # a later run screens against it without downloading anything
        data[FINGERPRINT_KEY] = fp.to_hex()
    return data


def own_prediction(
    target: ImageTarget, image: SimilarImage, thresholds: Thresholds, model_version: str
) -> dict:
    """A prediction from the image's own detections: its boxes are exact for it, not borrowed."""
    regions: list[dict[str, Any]] = []
    for control in target.rectangles:
        regions += own_rectangle_regions(control, image, thresholds.min_detection_score)
    one_voter = Thresholds(min_detection_score=thresholds.min_detection_score, top_k=1, choice_threshold=1.0)
    for control in target.choices:
        region = choices_region(control, vote_choices(control, (image,), one_voter))
        if region is not None:
            regions.append(region)
    return prediction(regions, model_version)
