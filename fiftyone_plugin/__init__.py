"""FiftyOne plugin ``@simages/similar-images``: find similar images and import them with labels.

Operators ``find_similar`` and ``import_similar`` (forms, App context, progress) are here;
the work they do is in ``_runs``, shared with the Python entry points ``find_similar(...)``
and ``import_similar(...)``. FiftyOne loads this file as a package from the plugin folder,
and it is also importable as ``simages_fiftyone``; only relative imports are used so that
both work.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from simages_core.coco import COCO_CLASSES

from ._downloads import DownloadPolicy
from ._results import SOURCE_LABELS, ParamError, RankedImage, SearchParams, class_summary
from ._runs import (
    HOW_TO_SET_PLUGIN_KEY,
    SECRET_API_KEY,
    SECRET_API_URL,
    FailedDownload,
    FindSimilarResult,
    ImportSimilarResult,
    Progress,
    build_import_options,
    build_params,
    find_similar,
    find_similar_with,
    import_similar,
    iter_import,
    make_client,
    record_run,
)

__all__ = [
    "DownloadPolicy",
    "FailedDownload",
    "FindSimilar",
    "FindSimilarResult",
    "ImportSimilar",
    "ImportSimilarResult",
    "ParamError",
    "Progress",
    "RankedImage",
    "find_similar",
    "import_similar",
    "register",
]

PLUGIN_NAME = "@simages/similar-images"
FIND_URI = f"{PLUGIN_NAME}/find_similar"
IMPORT_URI = f"{PLUGIN_NAME}/import_similar"
_QUERY_KEYS = ("source", "text", "url", "upload", "num_similar", "labels")


# --- shared form pieces -------------------------------------------------------------------------


def _secret(ctx: Any, key: str) -> str | None:
    try:
        value = ctx.secrets.get(key)
    except Exception:  # a secrets backend that is down must not break the form
        return None
    return value.strip() if isinstance(value, str) and value.strip() else None


def _client_from_ctx(ctx: Any):
    return make_client(_secret(ctx, SECRET_API_KEY), _secret(ctx, SECRET_API_URL))


def _default_source(ctx: Any) -> str:
    if ctx.current_sample:
        return "current_sample"
    if ctx.selected:
        return "selected"
    return "text"


def _params_from_ctx(ctx: Any, default_labels: bool) -> SearchParams:
    """Validate the form's query inputs against the App context (raises ``ParamError``)."""
    p = ctx.params
    source = p.get("source") or _default_source(ctx)
    upload = p.get("upload")
    sample_ids: list[str] = []
    if source == "selected":
        sample_ids = list(ctx.selected or [])
    elif source == "current_sample" and ctx.current_sample:
        sample_ids = [ctx.current_sample]
    return build_params(
        source=source,
        text=p.get("text"),
        url=p.get("url"),
        image=upload.get("content") if isinstance(upload, dict) else upload,
        image_name=upload.get("name") if isinstance(upload, dict) else None,
        sample_ids=sample_ids,
        num_similar=p.get("num_similar", 10),
        labels=bool(p.get("labels", default_labels)),
    )


def _query_inputs(ctx: Any, inputs: types.Object, default_labels: bool) -> dict[str, types.Property]:
    """The query part of both forms; returns the properties by name so errors can be attached."""
    props: dict[str, types.Property] = {}
    radio = types.RadioGroup()
    for source, label in SOURCE_LABELS.items():
        # Every source is offered; choosing one that the App context lacks explains what to do.
        n = len(ctx.selected or [])
        radio.add_choice(source, label=f"{label} ({n})" if source == "selected" else label)
    default = _default_source(ctx)
    props["source"] = inputs.enum("source", radio.values(), default=default, label="Search with", view=radio)
    source = ctx.params.get("source") or default
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


def _validate(ctx: Any, inputs: types.Object, props: dict[str, types.Property], check: Any) -> bool:
    """Run ``check()``; show its ``ParamError`` on the input it names (or as a banner)."""
    try:
        check()
    except ParamError as exc:
        prop = props.get(exc.field)
        if prop is not None:
            prop.invalid = True
            prop.error_message = exc.message
        else:  # nothing to point at (the API key, a missing selection): a banner that blocks the run
            inputs.view(
                "error",
                types.Error(label="Cannot search yet", description=exc.message),
                invalid=True,
                error_message=exc.message,
            )
        return False
    return True


def _check_key(ctx: Any) -> None:
    from simages_core import resolve_api_key

    if resolve_api_key(_secret(ctx, SECRET_API_KEY)) is None:
        raise ParamError("api_key", f"No Similar Images API key. {HOW_TO_SET_PLUGIN_KEY}")


def _gallery_markdown(result: FindSimilarResult, max_items: int = 50) -> str:
    lines = []
    for r in result.images[:max_items]:
        classes = class_summary(r.image) if result.labels else ""
        caption = f"**#{r.rank}** score {r.score:.3f}" + (f" · {classes}" if classes else "")
        lines.append(f"[![{r.image.id}]({r.image.thumbnail_url})]({r.image.url})  \n{caption}\n")
    if result.errors:
        lines.append("**Queries that failed:** " + "; ".join(result.errors))
    return "\n".join(lines) or "No similar images found."


# --- operators ----------------------------------------------------------------------------------


class FindSimilar(foo.Operator):
    """Find similar images and show them; the dataset is not changed."""

    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="find_similar",
            label="Find similar images (simages)",
            description="Search the Similar Images API with samples, a URL, an image or text",
            dynamic=True,
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        props = _query_inputs(ctx, inputs, default_labels=False)

        def check() -> None:
            _check_key(ctx)
            _params_from_ctx(ctx, False)

        if _validate(ctx, inputs, props, check):
            inputs.bool(
                "import_results",
                default=False,
                label="Then import them",
                description="Open the import form with the same query after showing the results",
            )
        return types.Property(inputs, view=types.View(label="Find similar images"))

    def execute(self, ctx: Any) -> dict[str, Any]:
        params = _params_from_ctx(ctx, default_labels=False)
        client = _client_from_ctx(ctx)
        try:
            result = find_similar_with(client, ctx.view, params)
        finally:
            client.close()
        if ctx.params.get("import_results") and not ctx.delegated:
            ctx.prompt(IMPORT_URI, params={k: ctx.params[k] for k in _QUERY_KEYS if k in ctx.params})
        return {
            "count": len(result),
            "gallery": _gallery_markdown(result),
            "results": [
                {
                    "rank": r.rank,
                    "score": r.score,
                    "id": r.image.id,
                    "url": r.image.url,
                    "thumbnail_url": r.image.thumbnail_url,
                    "query": str(r.query),
                    "classes": [d.name for d in r.image.detections or ()],
                }
                for r in result.images
            ],
            "errors": list(result.errors),
        }

    def resolve_output(self, ctx: Any) -> types.Property:
        outputs = types.Object()
        outputs.int("count", label="Similar images found")
        outputs.str("gallery", label="Results", view=types.MarkdownView())
        outputs.view(
            "import_button",
            types.Button(
                label="Import these with labels",
                operator=IMPORT_URI,
                params={k: ctx.params[k] for k in _QUERY_KEYS if k in ctx.params},
                prompt=True,
            ),
        )
        return types.Property(outputs, view=types.View(label="Similar images"))


class ImportSimilar(foo.Operator):
    """Find similar images, download them and add them as samples with labels and provenance."""

    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="import_similar",
            label="Import similar images with labels (simages)",
            description="Download similar images into a media folder and add them as new samples",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_delegation(self, ctx: Any) -> bool | None:
        return True if ctx.params.get("delegate") else None

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        props = _query_inputs(ctx, inputs, default_labels=True)
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
        target.add_choice(
            "current", label=f"Current dataset ({ctx.dataset.name})" if ctx.dataset else "Current"
        )
        target.add_choice("new", label="A new dataset")
        inputs.enum("target", target.values(), default="current", label="Add to", view=target)
        if ctx.params.get("target") == "new":
            props["new_dataset_name"] = inputs.str(
                "new_dataset_name", required=True, label="New dataset name"
            )
        props["media_dir"] = inputs.str(
            "media_dir",
            label="Media folder",
            description="Where downloaded images go; default: a 'simages' folder beside the dataset's media",
        )
        inputs.bool("delegate", default=False, label="Delegate", description="Run as a delegated operation")

        def check() -> None:
            _check_key(ctx)
            _params_from_ctx(ctx, True)
            _options_from_ctx(ctx)

        _validate(ctx, inputs, props, check)
        return types.Property(inputs, view=types.View(label="Import similar images"))

    def execute(self, ctx: Any):
        params = _params_from_ctx(ctx, default_labels=True)
        options = _options_from_ctx(ctx)
        client = _client_from_ctx(ctx)
        result: ImportSimilarResult | None = None
        try:
            for event in iter_import(client, ctx.view, params, options):
                if isinstance(event, Progress):
                    if ctx.delegated:
                        ctx.set_progress(progress=event.fraction, label=event.label)
                    else:
                        yield ctx.ops.set_progress(progress=event.fraction, label=event.label)
                else:
                    result = event
        finally:
            client.close()
        assert result is not None
        record_run(result, params, options)
        if ctx.delegated:
            return
        if result.imported:
            if result.dataset_name == ctx.dataset.name:
                yield ctx.ops.set_view(view=ctx.dataset.match_tags(result.tag))
            else:
                yield ctx.ops.open_dataset(result.dataset_name)
        yield ctx.ops.show_output(types.Property(_import_outputs()).to_json(), result.to_dict())

    def resolve_output(self, ctx: Any) -> types.Property:
        return types.Property(_import_outputs())


def _options_from_ctx(ctx: Any):
    p = ctx.params
    new_name = p.get("new_dataset_name") if p.get("target") == "new" or "target" not in p else None
    return build_import_options(
        media_dir=p.get("media_dir"),
        new_dataset_name=new_name,
        label_field=p.get("label_field") or "detections",
        classes=p.get("classes") or None,
        min_confidence=p.get("min_confidence", 0.0),
    )


def _import_outputs() -> types.Object:
    outputs = types.Object()
    outputs.int("imported", label="Imported")
    outputs.int("skipped_duplicates", label="Skipped (already in the dataset)")
    outputs.int("failed_downloads", label="Failed downloads")
    outputs.list("failures", types.String(), label="Why downloads failed")
    outputs.str("dataset_name", label="Dataset")
    outputs.str("tag", label="Run tag")
    outputs.str("media_dir", label="Media folder")
    return outputs


def register(p: Any) -> None:
    p.register(FindSimilar)
    p.register(ImportSimilar)
