"""The local Similar Images server: the simages.info protocol over a folder of your own images.

Modules: ``index`` (loading an index), ``image_folder`` (which files are images), ``indexing``
(building one and keeping it in step with its folder, with ``indexing_jobs``, ``indexing_writer``,
``indexing_report`` and ``coco_labels``), ``generations`` (its on-disk layout and single commit
point), ``embedders``, ``text_search``, ``app`` (the WSGI app), ``serving_state`` (the generation
served, following the folder), ``keys`` (API keys and daily limits), ``fetch`` (``url`` queries),
``demo`` (the demo collection), ``cli`` (``simages-server``) and ``testing`` (start a server for a
test suite).
"""
