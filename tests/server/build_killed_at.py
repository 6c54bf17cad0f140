"""Run ``build_index`` and SIGKILL this process at the N-th file-system write step (a test's wrapper).

Usage: ``python build_killed_at.py N IMAGES_DIR INDEX_DIR [ann]``. The steps counted are the calls
that make a build's effects durable or visible: ``os.replace``, ``os.rename``, ``os.link``,
``os.fsync``, ``os.unlink``, ``os.mkdir`` and ``shutil.rmtree``. The process kills itself just
*before* the N-th one runs; N = 0 runs the build to the end and prints how many steps it made.
No hook in the product code: the functions are wrapped here, from outside.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading

_count = 0
_names: list[str] = []
_lock = threading.Lock()


def _counted(module: object, name: str, kill_at: int) -> None:
    real = getattr(module, name)

    def wrapper(*args: object, **kwargs: object) -> object:
        global _count
        with _lock:
            _count += 1
            _names.append(name)
            if _count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(module, name, wrapper)


def main() -> int:
    kill_at, images, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ann = sys.argv[4] if len(sys.argv) > 4 else "off"
    from simages_server.indexing import build_index  # imported first: the wrappers count the build only

    for name in ("replace", "rename", "link", "fsync", "unlink", "mkdir"):
        _counted(os, name, kill_at)
    _counted(shutil, "rmtree", kill_at)
    report = build_index(images, out, progress=False, ann=ann)  # type: ignore[arg-type]
    print(f"steps={_count} generation={report.generation} calls={','.join(_names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
