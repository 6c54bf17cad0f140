"""``ParamError`` and the names each caller knows an input by, in one place.

A bad value is found once (``_params``, ``_search``, the core's ``Query``), and then named for
whoever gave it: the App's form input (``upload``, ``selected``, ``selected_labels``, with a hint
saying what to do there) or the Python parameter (``image``, ``sample_ids``, ``label_ids``, with the
reason alone). Validation
raises with the form's names; the Python entry points re-raise under theirs (``python_names``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from simages_core import InvalidRequest

# The form input a core request field (``InvalidRequest.field``) is typed into; the image (and the
# exactly-one rule) belongs to whichever input the chosen source uses, see ``form_input``.
_CORE_FIELD_INPUTS = {"url": "url", "text": "text", "num_similar": "num_similar", "get_labels": "labels"}
_SOURCE_INPUTS = {"text": "text", "url": "url", "upload": "upload"}
# What the App shows before the core's own reason, so the form says what to do there.
_INPUT_HINTS = {
    "text": "enter a text prompt, e.g. 'a cat on a sofa'",
    "url": "not an http(s) image URL",
    "upload": "choose an image file to upload",
}
PYTHON_NAMES = {
    "upload": "image",
    "selected": "sample_ids",
    "current_sample": "sample_ids",
    "selected_labels": "label_ids",
    "source": "text/url/image/sample_ids/label_ids",
}
"""Form input → the parameter of ``find_similar``/``import_similar``/``expand_dataset`` it stands
for, where the two differ (every other input is a parameter of the same name)."""


class ParamError(ValueError):
    """A parameter the user gave cannot be used; ``field`` names the input to blame.

    In the App ``field`` is the form input and ``message`` the form's wording; from the Python
    entry points ``field`` is the parameter's name (``image``, ``sample_ids``) and ``message``
    the reason without the form's hint. ``str()`` is ``"<field>: <message>"`` either way, so the
    text alone names the input (``execute_operator``, logs).
    """

    def __init__(self, field: str, message: str, *, python_message: str | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.python_message = message if python_message is None else python_message

    def for_python(self) -> ParamError:
        """The same error named for a Python caller."""
        return ParamError(PYTHON_NAMES.get(self.field, self.field), self.python_message)


def form_input(core_field: str | None, source: str) -> str:
    """The form input a core ``InvalidRequest.field`` concerns, given the chosen source."""
    if core_field in (None, "image", "url/image/text"):
        return _SOURCE_INPUTS.get(source, source)
    return _CORE_FIELD_INPUTS.get(core_field, source)


def from_core(exc: InvalidRequest, source: str) -> ParamError:
    """The core's refusal, on the form input it concerns (with the form's hint) and for Python."""
    name = form_input(exc.field, source)
    hint = _INPUT_HINTS.get(name)
    return ParamError(name, f"{hint} ({exc.message})" if hint else exc.message, python_message=exc.message)


@contextmanager
def python_names() -> Iterator[None]:
    """Inside, a ``ParamError`` leaves named for the Python caller (``image``, not ``upload``)."""
    try:
        yield
    except ParamError as exc:
        raise exc.for_python() from None
