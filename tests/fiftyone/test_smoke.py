"""A fresh interpreter with ``FIFTYONE_PLUGINS_DIR`` set finds the plugin and both operators."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fo_helpers import FO_ENV, REPO

SCRIPT = """
import json
import sys
import fiftyone.operators as foo
import fiftyone.plugins as fop
print(json.dumps({
    "plugins": fop.list_enabled_plugins(),
    "operators": sorted(o.uri for o in foo.list_operators() if o.uri.startswith("@simages/")),
    # loaded from the plugin folder under FiftyOne's module name, not as the package
    "modules": sorted(m for m in sys.modules if m.startswith("fiftyone.plugins.orgs.simages")),
    "package_imported": "simages_fiftyone" in sys.modules,
}))
"""


def test_fresh_interpreter_lists_every_operator():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_")}
    env.update(FO_ENV)
    env.pop("PYTHONPATH", None)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert "@simages/similar-images" in found["plugins"]
    assert found["operators"] == [
        "@simages/similar-images/expand_dataset",
        "@simages/similar-images/find_similar",
        "@simages/similar-images/import_similar",
        "@simages/similar-images/open_similar_images_panel",
        "@simages/similar-images/open_similar_images_panel_modal",
        "@simages/similar-images/similar_images_panel",
    ]
    assert "fiftyone.plugins.orgs.simages.similar_images._importing" in found["modules"]
    assert found["package_imported"] is False
    assert (REPO / "fiftyone_plugin" / "fiftyone.yml").is_file()
