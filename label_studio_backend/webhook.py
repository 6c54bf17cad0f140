"""What ``/webhook`` does with each event Label Studio sends (it registers the URL when a model is connected).

- ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` (and ``ANNOTATIONS_CREATED``, an import): learn from
  the annotation, replacing what the same annotation id taught before (``learning.learn``).
- ``ANNOTATIONS_DELETED``: take back what those annotations taught (the store remembers each one's counts).
- ``START_TRAINING`` ("Start training" in the model's settings): a new generation, so ``/setup`` answers
  a new ``model_version`` and "Retrieve predictions" predicts every task again with what was learned.
- Anything else, or a project whose config has nothing to learn: acknowledged (200) and ignored.

Answers are JSON; Label Studio ignores them, a person calling by hand reads them. A task whose image
cannot be read answers 422, a failed search 502, a store that is away 503: never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .context import BackendContext, model_version_for
from .label_config import ProjectSchema
from .learned_store import LearnedStoreError
from .learning import LearningError, forget, learn, learnable
from .region_controls import region_controls
from .webhook_events import DELETED_ACTION, LEARNED_ACTIONS, TRAIN_ACTION, WebhookEvent

logger = logging.getLogger("simages_label_studio")

Answer = tuple[dict[str, Any], int]


def _ignored(reason: str) -> Answer:
    return {"status": "ignored", "reason": reason}, 200


def handle_webhook(
    event: WebhookEvent, schema_for: Callable[[str], ProjectSchema], ctx: BackendContext
) -> Answer:
    """The answer to one event; ``schema_for`` parses a label config (cached, a 400 when it is not XML).

    Learned state is kept under the project's uid (``WebhookProject.key``), as ``/predict`` names it.
    """
    if event.action not in (*LEARNED_ACTIONS, DELETED_ACTION, TRAIN_ACTION):
        logger.debug("webhook %s ignored: nothing to learn from it", event.action)
        return _ignored(f"{event.action} teaches nothing")
    project = event.project
    assert project is not None  # WebhookEvent requires it for these actions
    if not project.label_config:
        return {"error": f"a {event.action} event must carry 'project.label_config'", "status": 400}, 400
    schema = schema_for(project.label_config)
    keypoints = [
        c
        for c in region_controls(schema, project.label_config, ctx.settings.label_map).values()
        if c.shape == "keypoint"
    ]
    if not learnable(schema, keypoints):
        return _ignored(
            "the project's label config has no Choices, RectangleLabels or KeyPointLabels on an <Image> to learn"
        )
    key = project.key
    try:
        if event.action == TRAIN_ACTION:
            generation = ctx.learned_store().next_generation(key)
            logger.info(
                "project %s: START_TRAINING, learned labels now generation %d", project.id, generation
            )
        elif event.action == DELETED_ACTION:
            forget(key, event.deleted, ctx)
        else:
            for annotation in event.annotations:
                learn(key, annotation, schema, ctx, keypoints)
    except LearningError as exc:
        logger.warning("project %s: cannot learn from %s: %s", project.id, event.action, exc)
        return {"error": str(exc), "status": exc.status}, exc.status
    except LearnedStoreError as exc:
        message = ctx.redact(str(exc))
        logger.warning("project %s: %s", project.id, message)
        return {"error": message, "status": 503}, 503
    evidence = ctx.evidence(key)
    return {
        "status": "ok",
        "action": event.action,
        "annotations_learned": evidence.annotations,
        "model_version": model_version_for(schema, ctx.client.base_url, evidence),
    }, 200
