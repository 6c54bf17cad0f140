"""The local Similar Images server: the simages.info protocol over a folder of your own images.

Modules: ``index`` (loading an index), ``indexing`` (building one and keeping it in step with its
folder), ``generations`` (its on-disk layout and single commit point), ``embedders``,
``text_search``, ``app`` (the WSGI app), ``keys`` (API keys and daily limits), ``fetch`` (``url``
queries), ``demo`` (the demo collection), ``cli`` (``simages-server``) and ``testing`` (start a
server for a test suite).
"""
