"""FiftyOne plugin ``@simages/similar-images``: find similar images and import them with labels.

The operators ``find_similar``, ``import_similar`` and ``expand_dataset`` and ``register`` are
here; their forms are in ``_forms`` and their output views in ``_form_outputs``, the work in ``_search``/``_importing``/``_expanding``, shared
with the Python entry points ``find_similar(...)``, ``import_similar(...)`` and
``expand_dataset(...)`` (``_python_api``). FiftyOne loads this file as
a package from the plugin folder, and it is also importable as ``simages_fiftyone``; only
relative imports are used so that both work.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from contextlib import closing
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._downloads import DownloadPolicy
from ._expanding import iter_expand, plan_expand
from ._form_outputs import expand_outputs, find_output, find_results, gallery_markdown, import_outputs
from ._forms import (
    IMMEDIATE_MAX_SAMPLES,
    QUERY_KEYS,
    budget_notice,
    check_key,
    client_from_ctx,
    copy_options_from_ctx,
    expand_inputs,
    expand_params_from_ctx,
    import_target_inputs,
    options_from_ctx,
    params_from_ctx,
    query_inputs,
    show_errors,
)
from ._importing import iter_import
from ._outcomes import (
    ExpandResult,
    FailedDownload,
    FindSimilarResult,
    ImportSimilarResult,
    Progress,
    RankedImage,
)
from ._panel import OpenPanelInGrid, OpenPanelInModal, SimilarImagesPanel
from ._param_errors import ParamError
from ._python_api import expand_dataset, find_similar, import_similar
from ._search import find_similar_with

__all__ = [
    "DownloadPolicy",
    "ExpandDataset",
    "ExpandResult",
    "FailedDownload",
    "FindSimilar",
    "FindSimilarResult",
    "ImportSimilar",
    "ImportSimilarResult",
    "OpenPanelInGrid",
    "OpenPanelInModal",
    "ParamError",
    "Progress",
    "RankedImage",
    "SimilarImagesPanel",
    "expand_dataset",
    "find_similar",
    "import_similar",
    "register",
]

PLUGIN_NAME = "@simages/similar-images"
FIND_URI = f"{PLUGIN_NAME}/find_similar"
IMPORT_URI = f"{PLUGIN_NAME}/import_similar"
EXPAND_URI = f"{PLUGIN_NAME}/expand_dataset"


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
        props = query_inputs(ctx, inputs, default_labels=False)

        def check() -> None:
            check_key(ctx)
            params_from_ctx(ctx, False)
            copy_options_from_ctx(ctx)

        props["collapse_copies"] = inputs.bool(
            "collapse_copies",
            default=True,
            label="Collapse copies",
            description="Show one image per group of near-duplicates ('N copies' beside it) and mark "
            "copies of samples already in the dataset",
        )
        if show_errors(ctx, inputs, props, check):
            inputs.bool(
                "import_results",
                default=False,
                label="Then import them",
                description="Open the import form with the same query after showing the results",
            )
        return types.Property(inputs, view=types.View(label="Find similar images"))

    def execute(self, ctx: Any) -> dict[str, Any]:
        params = params_from_ctx(ctx, default_labels=False)
        copies = copy_options_from_ctx(ctx)
        client = client_from_ctx(ctx)
        try:
            result = find_similar_with(client, ctx.view, params, copies)
        finally:
            client.close()
        query = {k: ctx.params[k] for k in QUERY_KEYS if k in ctx.params}
        # The gallery goes to the App's output window (``show_output``), not to this operator's
        # prompt: FiftyOne 1.22 keeps a prompt's finished state when a button in its output
        # prompts another operator, so the import form would never open from there. With no
        # ``resolve_output`` the find prompt closes, and the button opens a fresh import prompt.
        outputs, values = find_output(result, query, IMPORT_URI)
        ctx.ops.show_output(
            types.Property(outputs, view=types.View(label="Similar images")).to_json(), values
        )
        if ctx.params.get("import_results") and not ctx.delegated:
            ctx.prompt(IMPORT_URI, params=query)
        return {
            "count": len(result),
            "gallery": gallery_markdown(result),
            "results": find_results(result),
            "errors": list(result.errors),
            "copies_collapsed": result.copies_collapsed,
            "copies_of_samples": result.copies_of_samples,
        }


class _ImportingOperator(foo.Operator):
    """What the import and expand operators share: a long run, delegated when the form says so,
    progress relayed to the App, and the imported samples shown at the end."""

    @staticmethod
    def _config(name: str, label: str, description: str) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name=name,
            label=label,
            description=description,
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_delegation(self, ctx: Any) -> bool | None:
        return True if ctx.params.get("delegate") else None

    @staticmethod
    def _relay(ctx: Any, events: Iterable[Any]) -> Generator[Any, None, Any]:
        """Forward each ``Progress`` to the App (or the delegated run); return the final result."""
        result = None
        for event in events:
            if not isinstance(event, Progress):
                result = event
            elif ctx.delegated:
                ctx.set_progress(progress=event.fraction, label=event.label)
            else:
                yield ctx.ops.set_progress(progress=event.fraction, label=event.label)
        assert result is not None
        return result

    @staticmethod
    def _show(ctx: Any, result: ImportSimilarResult | ExpandResult, outputs: types.Object) -> Iterator[Any]:
        """Show the run's new samples (this dataset's view, or the new dataset) and the summary."""
        if result.imported and result.dataset_name == ctx.dataset.name:
            yield ctx.ops.set_view(view=ctx.dataset.match_tags(result.tag))
        elif result.imported:
            yield ctx.ops.open_dataset(result.dataset_name)
        yield ctx.ops.show_output(types.Property(outputs).to_json(), result.to_dict())


class ImportSimilar(_ImportingOperator):
    """Find similar images, download them and add them as samples with labels and provenance."""

    @property
    def config(self) -> foo.OperatorConfig:
        return self._config(
            "import_similar",
            "Import similar images with labels (simages)",
            "Download similar images into a media folder and add them as new samples",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        props = query_inputs(ctx, inputs, default_labels=True)
        props.update(import_target_inputs(ctx, inputs))
        inputs.bool("delegate", default=False, label="Delegate", description="Run as a delegated operation")

        def check() -> None:
            check_key(ctx)
            params_from_ctx(ctx, True)
            options_from_ctx(ctx)

        show_errors(ctx, inputs, props, check)
        return types.Property(inputs, view=types.View(label="Import similar images"))

    def execute(self, ctx: Any):
        params = params_from_ctx(ctx, default_labels=True)
        options = options_from_ctx(ctx)
        client = client_from_ctx(ctx)
        try:
            result: ImportSimilarResult = yield from self._relay(
                ctx, iter_import(client, ctx.view, params, options)
            )
        finally:
            client.close()
        if not ctx.delegated:
            yield from self._show(ctx, result, import_outputs())

    def resolve_output(self, ctx: Any) -> types.Property:
        return types.Property(import_outputs())


class ExpandDataset(_ImportingOperator):
    """Search with every sample of the view and add the similar images found: batched, resumable, capped."""

    @property
    def config(self) -> foo.OperatorConfig:
        return self._config(
            "expand_dataset",
            "Expand dataset with similar images (simages)",
            "Every sample of the current view finds similar images, added as new samples",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        props = expand_inputs(ctx, inputs)
        props.update(import_target_inputs(ctx, inputs))
        inputs.bool(
            "delegate",
            default=ctx.view is not None and len(ctx.view) > IMMEDIATE_MAX_SAMPLES,
            label="Delegate",
            description="Run as a delegated operation (recommended for large views)",
        )

        def check() -> None:
            check_key(ctx)
            params = expand_params_from_ctx(ctx)
            plan = plan_expand(ctx.view, params, options_from_ctx(ctx))
            client = client_from_ctx(ctx)
            try:
                budget_notice(inputs, plan, plan.budget(client, params.max_requests))
            finally:
                client.close()

        show_errors(ctx, inputs, props, check)
        return types.Property(inputs, view=types.View(label="Expand dataset with similar images"))

    def execute(self, ctx: Any):
        params = expand_params_from_ctx(ctx)
        options = options_from_ctx(ctx)
        client = client_from_ctx(ctx)
        try:
            with closing(iter_expand(client, ctx.view, params, options)) as events:
                result: ExpandResult = yield from self._relay(ctx, events)
        finally:
            client.close()
        if not ctx.delegated:
            yield from self._show(ctx, result, expand_outputs())

    def resolve_output(self, ctx: Any) -> types.Property:
        return types.Property(expand_outputs())


def register(p: Any) -> None:
    p.register(FindSimilar)
    p.register(ImportSimilar)
    p.register(ExpandDataset)
    p.register(SimilarImagesPanel)
    p.register(OpenPanelInGrid)
    p.register(OpenPanelInModal)
