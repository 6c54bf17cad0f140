"""The operators' forms: App context → validated parameters, inputs and inline errors.

Validation is the same code as for Python callers (``_params``); this module only reads the
App context (params, selection, secrets) and shows a ``ParamError`` on the input it names, once
the user has acted (a fresh form shows no error). What a finished run shows is ``_form_outputs``.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators.types as types

from simages_core import RequestBudget, SimilarImagesClient
from simages_core.coco import COCO_CLASSES
from simages_core.identity import COPY_DISTANCE

from ._expanding import ExpandPlan
from ._importing import default_media_dir
from ._label_queries import find_detections, label_ids_from_selection
from ._params import (
    SOURCE_LABELS,
    CopyOptions,
    ExpandParams,
    ImportOptions,
    ParamError,
    SearchParams,
    build_copy_options,
    build_expand_params,
    build_import_options,
    build_params,
    decode_upload,
)
from ._search import SECRET_API_KEY, SECRET_API_URL, check_api_key, make_client, plan_queries

QUERY_KEYS = ("source", "text", "url", "upload", "num_similar", "labels")
"""The inputs that say what to search for, handed from the find form to the import form."""


def secret(ctx: Any, key: str) -> str | None:
    try:
        value = ctx.secrets.get(key)
    except Exception:  # a secrets backend that is down must not break the form
        return None
    return value.strip() if isinstance(value, str) and value.strip() else None


def client_from_ctx(ctx: Any) -> SimilarImagesClient:
    return make_client(secret(ctx, SECRET_API_KEY), secret(ctx, SECRET_API_URL))


def check_key(ctx: Any) -> None:
    check_api_key(secret(ctx, SECRET_API_KEY))


def default_source(ctx: Any) -> str:
    # Selected detections are the most specific choice (the modal's sample is open around them).
    if ctx.selected_labels:
        return "selected_labels"
    if ctx.current_sample:
        return "current_sample"
    if ctx.selected:
        return "selected"
    return "text"


def params_from_ctx(ctx: Any, default_labels: bool) -> SearchParams:
    """Validate the form's query inputs against the App context (raises ``ParamError``).

    For the sample sources the samples' files are planned too, so the form reports a
    sample without a file (or a bad ``num_similar``) before anything runs; selected labels are
    looked up (each must be a detection of this dataset with a file), their boxes cut only when run.
    """
    p = ctx.params
    source = p.get("source") or default_source(ctx)
    sample_ids: list[str] = []
    label_ids, label_samples = (
        label_ids_from_selection(ctx.selected_labels) if source == "selected_labels" else ([], [])
    )
    if source == "selected":
        sample_ids = list(ctx.selected or [])
    elif source == "current_sample" and ctx.current_sample:
        sample_ids = [ctx.current_sample]
    image: bytes | None = None
    image_name: str | None = None
    if source == "upload":
        upload = p.get("upload")
        image = decode_upload(upload.get("content") if isinstance(upload, dict) else upload)
        image_name = upload.get("name") if isinstance(upload, dict) else None
    params = build_params(
        source=source,
        text=p.get("text"),
        url=p.get("url"),
        image=image,
        image_name=image_name,
        sample_ids=sample_ids,
        label_ids=label_ids,
        label_samples=label_samples,
        num_similar=p.get("num_similar", 10),
        labels=bool(p.get("labels", default_labels)),
    )
    if params.sample_ids:
        plan_queries(ctx.view, params)
    if params.label_ids:
        find_detections(ctx.view._dataset, params.label_ids, params.label_samples)
    return params


def options_from_ctx(ctx: Any) -> ImportOptions:
    p = ctx.params
    new_name = None
    if p.get("target") == "new":
        new_name = p.get("new_dataset_name") or ""  # "new" without a name is an error, not "current"
    elif "target" not in p:  # execute_operator callers may name the dataset alone
        new_name = p.get("new_dataset_name")
    return build_import_options(
        media_dir=p.get("media_dir"),
        new_dataset_name=new_name,
        label_field=p.get("label_field") or "detections",
        classes=p.get("classes") or None,
        min_confidence=p.get("min_confidence", 0.0),
        screen_copies=p.get("screen_copies", True),
        copy_threshold=p.get("copy_threshold", COPY_DISTANCE),
    )


def copy_options_from_ctx(ctx: Any) -> CopyOptions:
    """The find form's copy options: collapse near-duplicates and mark the dataset's copies (both on by default)."""
    p = ctx.params
    collapse = p.get("collapse_copies", True)
    return build_copy_options(
        collapse=collapse, mark=collapse, threshold=p.get("copy_threshold", COPY_DISTANCE)
    )


def media_dir_default(ctx: Any) -> str | None:
    """Where downloads go when the form's media folder is left empty, for the target the form names."""
    p = ctx.params
    name = (
        p.get("new_dataset_name") if p.get("target") == "new" else (ctx.dataset.name if ctx.dataset else None)
    )
    return default_media_dir(name.strip()) if isinstance(name, str) and name.strip() else None


def query_inputs(ctx: Any, inputs: types.Object, default_labels: bool) -> dict[str, types.Property]:
    """The query part of both forms; returns the properties by name so errors can be attached."""
    props: dict[str, types.Property] = {}
    radio = types.RadioGroup()
    counts = {"selected": len(ctx.selected or []), "selected_labels": len(ctx.selected_labels or [])}
    for source, label in SOURCE_LABELS.items():
        # Every source is offered; choosing one that the App context lacks explains what to do.
        radio.add_choice(source, label=f"{label} ({counts[source]})" if source in counts else label)
    default = default_source(ctx)
    props["source"] = inputs.enum("source", radio.values(), default=default, label="Search with", view=radio)
    source = ctx.params.get("source") or default
    if source == "selected_labels" and counts["selected_labels"]:
        n = counts["selected_labels"]
        inputs.view(
            "selected_labels_notice",
            types.Notice(
                label=f"{n} selected detection{'s' if n != 1 else ''} as quer{'ies' if n != 1 else 'y'}: "
                "each box is cut from its sample's image and searched"
            ),
        )
    if source == "text":
        props["text"] = inputs.str(
            "text", required=True, label="Text prompt", description="e.g. 'a cat on a sofa'"
        )
    elif source == "url":
        props["url"] = inputs.str("url", required=True, label="Image URL", description="http(s)://...")
    elif source == "upload":
        props["upload"] = inputs.define_property(
            "upload",
            types.UploadedFile(),
            required=True,
            label="Image",
            view=types.FileView(label="Image file", types=".jpg,.jpeg,.png,.webp,.bmp,.gif,.tif,.tiff"),
        )
    props["num_similar"] = inputs.int(
        "num_similar",
        default=10,
        min=1,
        max=50,
        label="Number of similar images",
        description="1 to 50 per query; several selected samples are merged by image id",
    )
    props["labels"] = inputs.bool(
        "labels",
        default=default_labels,
        label="Detect objects",
        description="COCO-YOLOv7 boxes for each image",
    )
    return props


def import_target_inputs(ctx: Any, inputs: types.Object) -> dict[str, types.Property]:
    """Where imported samples go and how their labels are written (import and expand forms)."""
    props: dict[str, types.Property] = {}
    props["label_field"] = inputs.str("label_field", default="detections", label="Detections field")
    class_choices = types.AutocompleteView()
    for name in COCO_CLASSES:
        class_choices.add_choice(name, label=name)
    props["classes"] = inputs.list(
        "classes",
        types.String(),
        label="Only these classes",
        description="Leave empty to keep every class",
        view=class_choices,
    )
    props["min_confidence"] = inputs.float(
        "min_confidence", default=0.0, min=0.0, max=1.0, label="Minimum confidence"
    )
    target = types.RadioGroup()
    target.add_choice("current", label=f"Current dataset ({ctx.dataset.name})" if ctx.dataset else "Current")
    target.add_choice("new", label="A new dataset")
    inputs.enum("target", target.values(), default="current", label="Add to", view=target)
    if ctx.params.get("target") == "new":
        props["new_dataset_name"] = inputs.str("new_dataset_name", required=True, label="New dataset name")
    default_dir = media_dir_default(ctx)
    props["media_dir"] = inputs.str(
        "media_dir",
        label="Media folder",
        description=f"Where downloaded images go; empty: {default_dir}"
        if default_dir
        else "Where downloaded images go; empty: a 'simages' folder in FiftyOne's dataset directory",
    )
    props["screen_copies"] = inputs.bool(
        "screen_copies",
        default=True,
        label="Skip copies",
        description="Skip images that are copies (resized, recompressed, cropped, mirrored...) of samples "
        "already in the dataset or of each other; the dataset's samples are fingerprinted once",
    )
    if ctx.params.get("screen_copies", True):
        props["copy_threshold"] = inputs.int(
            "copy_threshold",
            default=COPY_DISTANCE,
            min=0,
            max=64,
            label="Copy threshold (bits)",
            description=f"Fingerprints at most this many bits apart (of 64) are copies; default {COPY_DISTANCE}",
        )
    return props


def user_has_acted(ctx: Any, inputs: types.Object) -> bool:
    """Whether the form's values are more than what it offered: something typed, chosen or prompted.

    The App resolves a form when it opens (no params) and again with each input's default filled
    in; only a value that differs from its input's default (a typed prompt, even one cleared
    again: ``""`` is not the unset ``None``) is the user's. Params a caller handed over
    (``ctx.prompt(..., params=query)``) count as given. At execution (``ctx.executor`` is set,
    also for ``execute_operator``) the form is always validated.
    """
    if getattr(ctx, "executor", None) is not None:
        return True
    fields = inputs.properties
    return any(
        name in fields and value is not None and value != [] and value != fields[name].default
        for name, value in (ctx.params or {}).items()
    )


def show_errors(ctx: Any, inputs: types.Object, props: dict[str, types.Property], check: Any) -> bool:
    """Run ``check()``; show its ``ParamError`` on the input it names (or as a banner).

    Until the user has acted (``user_has_acted``) an input's error is not shown, so a fresh
    form is not red; it still reports invalid (returns ``False``). A banner is shown at once:
    it is about what no input can fix (the API key, the selected samples).
    """
    try:
        check()
    except ParamError as exc:
        prop = props.get(exc.field)
        if prop is not None and not user_has_acted(ctx, inputs):
            return False
        if prop is not None:
            prop.invalid = True
            prop.error_message = exc.message
        else:  # nothing to point at (the API key, a missing selection): a banner that blocks the run
            inputs.view(
                "error",
                types.Error(label="Cannot search yet", description=exc.message),
                invalid=True,
                error_message=str(exc),  # names what is wrong: ``selected: ...``, ``api_key: ...``
            )
        return False
    return True


# --- expand form ----------------------------------------------------------------------------------

IMMEDIATE_MAX_SAMPLES = 200
"""Views up to this size run immediately by default; larger ones are delegated."""


def expand_params_from_ctx(ctx: Any) -> ExpandParams:
    p = ctx.params
    return build_expand_params(
        per_sample=p.get("per_sample", 5),
        labels=p.get("labels", True),
        max_requests=p.get("max_requests"),
    )


def expand_inputs(ctx: Any, inputs: types.Object) -> dict[str, types.Property]:
    """The expand form's own inputs: results per sample, labels, the request cap."""
    props: dict[str, types.Property] = {}
    props["per_sample"] = inputs.int(
        "per_sample",
        default=5,
        min=1,
        max=50,
        label="Similar images per sample",
        description="1 to 50; every sample of the current view is one API request",
    )
    props["labels"] = inputs.bool(
        "labels", default=True, label="Detect objects", description="COCO-YOLOv7 boxes for each image"
    )
    props["max_requests"] = inputs.int(
        "max_requests",
        min=0,
        label="Maximum requests",
        description="Stop after this many API requests; run again with the same settings to continue",
    )
    return props


def budget_notice(inputs: types.Object, plan: ExpandPlan, budget: RequestBudget) -> None:
    """What the run will cost, before it runs: requests, how many beyond today's free ones, progress so far."""
    done = plan.total - len(plan.todo)
    resumed = (
        f" {done} of {plan.total} samples were searched by an earlier run and are skipped." if done else ""
    )
    inputs.view(
        "budget",
        types.Notice(label=f"This run: {budget.describe()}.{resumed}"),
    )
