"""Which index generation the server answers from, and following the index folder to the next one.

A request takes one immutable ``ServingState`` at its start; ``IndexFollower`` loads a new generation
in the background and swaps that one reference, so no request sees half of two generations.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Any

from .generations import stamp
from .index import ImageIndex
from .text_search import TextIndex

logger = logging.getLogger("simages_server")

# /health's "labels" when no image has any: what an empty "annotations" list means, and the fix.
NO_LABELS = "none: re-index with --detector FILE.onnx or --coco FILE.json"


@dataclass(frozen=True)
class ServingState:
    """One generation of the index and everything derived from it: a request takes one at its start and
    uses it throughout, so a swap between two requests never shows one request half of each."""

    index: ImageIndex
    text_index: TextIndex
    stamp: tuple[int, int, int] | None
    """The pointer file's identity when this generation was read (see ``generations.stamp``)."""

    @classmethod
    def of(cls, index: ImageIndex, pointer_stamp: tuple[int, int, int] | None) -> ServingState:
        text_index = TextIndex(
            [
                None if r.detections is None else [(d.name, d.score) for d in r.detections]
                for r in index.records
            ],
            [r.caption for r in index.records],
        )
        return cls(index, text_index, pointer_stamp)

    @property
    def labels(self) -> str:
        """``/health``'s ``labels``: how many images have labels, or ``NO_LABELS``."""
        labelled = self.index.labelled
        return f"{labelled} of {len(self.index)} images" if labelled else NO_LABELS

    def health(self) -> dict[str, Any]:
        index = self.index
        return {
            "generation": index.generation,
            "images": len(index),
            "labelled": index.labelled,
            "ann": index.ann.count if index.ann is not None else 0,
        }


class IndexFollower:
    """The generation being served (``state``), replaced when the index folder's pointer changes."""

    def __init__(self, index: ImageIndex, embedder: str) -> None:
        self._embedder = embedder
        """The server's embedder name: a generation built with another is not served."""
        self.state = ServingState.of(index, stamp(index.root))
        say_if_unlabelled(self.state)
        self._failed_stamp: tuple[int, int, int] | None = None
        self._reload_lock = threading.Lock()
        self._stop_watching = threading.Event()

    def reload(self) -> bool:
        """Load the index folder's current generation if it changed, and swap it in; True if swapped.

        A generation that does not load (or was built with another embedder) is logged and the one
        being served stays; it is not tried again until the folder's pointer changes once more.
        """
        with self._reload_lock:
            state = self.state
            root = state.index.root
            now = stamp(root)
            if now is None or now == state.stamp or now == self._failed_stamp:
                return False
            try:
                index = ImageIndex.load(root)
                if index.embedder != self._embedder:
                    raise ValueError(
                        f"it was built with {index.embedder}, and this server embeds with {self._embedder}"
                    )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._failed_stamp = now
                logger.error("kept serving generation %d of %s: the new index did not load: %s",
                             state.index.generation, root, exc)  # fmt: skip
                return False
            if index.generation == state.index.generation and index.folder == state.index.folder:
                self.state = replace(state, stamp=now)
                return False
            self.state = ServingState.of(index, now)
            self._failed_stamp = None
            logger.info(
                "now serving generation %d of %s: %d images (was generation %d, %d images)",
                index.generation, root, len(index), state.index.generation, len(state.index),
            )  # fmt: skip
            say_if_unlabelled(self.state)
            return True

    def watch(self, interval: float) -> threading.Thread:
        """Look for a new generation every ``interval`` seconds in a background thread (one stat a look)."""

        def watch() -> None:
            while not self._stop_watching.wait(interval):
                try:
                    self.reload()
                except Exception:  # a bug: log it and keep watching (and serving the current index)
                    logger.exception("looking for a new index generation failed")

        thread = threading.Thread(target=watch, name="index-watcher", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop_watching.set()


def say_if_unlabelled(state: ServingState) -> None:
    """Once per generation served: an index without labels answers empty annotations, by design, and
    nothing else would tell the operator why (the answers stay as documented)."""
    if state.index.labelled == 0:
        logger.warning(
            "the index at %s (generation %d) has no labels: searches asking for labels answer empty "
            "annotations, and text search finds only captions unless the server has --clip-model; "
            "re-index with --detector FILE.onnx or --coco FILE.json",
            state.index.root, state.index.generation,
        )  # fmt: skip
