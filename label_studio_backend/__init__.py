"""Label Studio ML backend for the Similar Images API: pre-annotations from near-duplicates and similar images.

``model.SimilarImagesBackend`` is the ``LabelStudioMLBase`` subclass; ``_wsgi`` serves it;
``expand`` grows a project with similar images as new, pre-labelled tasks.
"""

from simages_core import __version__

__all__ = ["__version__"]
