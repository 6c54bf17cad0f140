"""One WARNING, per model, when the API's answers carry no labels at all: predictions will be empty.

An index built without a detector or COCO file answers a search asked for labels with an empty
list for every image, which is the documented answer, so nothing fails: the backend would store
empty predictions with no hint why. Warned once per model version (not per request), and only
while no answer for that model has carried a single label, so a labelled index whose one answer
happens to show no objects does not trigger it once labels have been seen.
"""

from __future__ import annotations

import logging
import threading

from simages_core import SearchResult

logger = logging.getLogger("simages_label_studio")

HOW_TO_LABEL = (
    "if this is a local index without labels, add them with `simages-server index --detector FILE.onnx` "
    "or `--coco FILE.json`"
)


class UnlabelledAnswerWarning:
    """Shared by every model instance of a backend process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._labelled: set[str] = set()  # model versions an answer with a label was seen for
        self._warned: set[str] = set()

    def note(self, model_version: str, result: SearchResult | None, api_url: str) -> None:
        if result is None or not result.labels_requested or not result.images:
            return
        has_labels = any(image.detections for image in result.images)
        with self._lock:
            if has_labels:
                self._labelled.add(model_version)
                return
            if model_version in self._labelled or model_version in self._warned:
                return
            self._warned.add(model_version)
        logger.warning(
            "the Similar Images API (%s) answered with no labels for any similar image though labels were "
            "asked for: predictions of model %s will be empty; %s",
            api_url,
            model_version,
            HOW_TO_LABEL,
        )
