"""The names the plugin registers (schemes, model shapes, FFN initializations), without importing fairseq each time.

Every ``python -m normpos.sweep`` process checks its config's names against the plugin (schema.validate).
Importing the plugin means importing torch and fairseq, 2-4 s of a 2-core machine, and a dry run or a test
starts dozens of such processes only to read three short lists. The lists are therefore read once per
plugin source, by importing the plugin as before, and kept in a small JSON file named by a sha256 over every
``.py`` file of the plugin (a new scheme file or any edit gives a new name), the Python and fairseq
versions. The plugin stays the one place that defines the names: the cache is derived from it and never
edited. The file lives in the user's cache folder (``$XDG_CACHE_HOME/normpos``, default ``~/.cache/normpos``;
``NORMPOS_CACHE_DIR`` overrides it), not in the checkout; where that cannot be written, the names are read
from the plugin every time, as before.
"""

import hashlib
import importlib.util
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Dict, List, Optional

from normpos.files import write_json

PLUGIN_PACKAGE = "normpos_fairseq"


def plugin_dir() -> Path:
    """The plugin package's folder, found without running its ``__init__`` (which imports fairseq)."""
    spec = importlib.util.find_spec(PLUGIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the fairseq plugin {PLUGIN_PACKAGE} is not importable (PYTHONPATH must hold plugins/)")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def source_key(folder: Path) -> str:
    """sha256 over the plugin's Python files (relative path and bytes) and the versions that import them."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    try:
        fairseq_version = version("fairseq")
    except PackageNotFoundError:
        fairseq_version = "none"
    digest.update(f"{sys.version}\0{fairseq_version}".encode())
    return digest.hexdigest()


def cache_dir() -> Path:
    explicit = os.environ.get("NORMPOS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "normpos"


def read_from_plugin() -> Dict[str, List[str]]:
    """The names as the imported plugin registers them (imports torch and fairseq)."""
    from normpos_fairseq.architectures.transformer_normpos import SHAPES
    from normpos_fairseq.ffn_init import FFN_INITS
    from normpos_fairseq.schemes import scheme_names

    return {"schemes": list(scheme_names()), "shapes": list(SHAPES), "ffn_inits": list(FFN_INITS)}


def cached(path: Path) -> Optional[Dict[str, List[str]]]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(names, dict) and all(isinstance(names.get(k), list) for k in ("schemes", "shapes", "ffn_inits")):
        return names
    return None


_NAMES: Optional[Dict[str, List[str]]] = None


def plugin_names() -> Dict[str, List[str]]:
    """``{"schemes": [...], "shapes": [...], "ffn_inits": [...]}``, as the plugin registers them."""
    global _NAMES
    if _NAMES is None:
        path = cache_dir() / "plugin-names" / f"{source_key(plugin_dir())}.json"
        _NAMES = cached(path)
        if _NAMES is None:
            _NAMES = read_from_plugin()
            try:
                write_json(path, _NAMES)
            except OSError:  # a read-only home: every process reads the plugin, as it did before the cache
                pass
    return _NAMES
