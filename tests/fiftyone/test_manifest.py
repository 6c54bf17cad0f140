"""``fiftyone.yml`` agrees with the distribution: one version everywhere, every operator listed."""

from __future__ import annotations

import yaml
from fo_helpers import PLUGIN_SRC

import simages_core
import simages_fiftyone


def manifest() -> dict:
    return yaml.safe_load((PLUGIN_SRC / "fiftyone.yml").read_text(encoding="utf-8"))


def test_plugin_version_is_the_distribution_version():
    # simages_core.__version__ comes from the installed package metadata (pyproject.toml)
    assert simages_core.__version__ != "0+unknown", "simages-plugins is not installed"
    assert str(manifest()["version"]) == simages_core.__version__


def test_every_operator_class_is_listed():
    registered = sorted(
        cls().config.name
        for cls in (
            simages_fiftyone.FindSimilar,
            simages_fiftyone.ImportSimilar,
            simages_fiftyone.ExpandDataset,
            simages_fiftyone.OpenPanelInGrid,
            simages_fiftyone.OpenPanelInModal,
        )
    )
    assert sorted(manifest()["operators"]) == registered
    assert manifest()["panels"] == [simages_fiftyone.SimilarImagesPanel().config.name]
