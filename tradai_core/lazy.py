"""`LazyModule`: a module imported on first use, so loading the code location imports no heavy library.

    stats = LazyModule("scipy.stats")      # nothing imported yet
    stats.norm.cdf(1.0)                     # scipy.stats imported here, once

Attribute access imports the module (and runs `setup` first, once: e.g. choosing matplotlib's backend).
An `except lazy.SomeError:` clause is evaluated only when an exception reaches it, so it imports nothing
until then. Nothing is put in `sys.modules` until the real import: a test can tell what was loaded.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

_OWN = frozenset({"_name", "_setup", "_module", "_lock"})


class LazyModule:
    """Stands in for the module `name` until an attribute is used."""

    def __init__(self, name: str, setup: Callable[[], None] | None = None) -> None:
        self._name = name
        self._setup = setup
        self._module: ModuleType | None = None
        self._lock = threading.Lock()

    def load(self) -> ModuleType:
        """The real module, imported on first call."""
        if self._module is None:
            with self._lock:
                if self._module is None:
                    if self._setup is not None:
                        self._setup()
                    self._module = importlib.import_module(self._name)
        return self._module

    def __getattr__(self, attr: str) -> Any:
        if attr in _OWN:  # our own slots, looked up before __init__ set them (e.g. copy): never an import
            raise AttributeError(attr)
        return getattr(self.load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name}{'' if self._module is None else ' (loaded)'}>"
