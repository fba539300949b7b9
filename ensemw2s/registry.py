"""Name -> entry registries (datasets, combiners, alpha rules, ...), with "did you mean" on a typo.

Extending the suite means adding an entry through a decorator or `add`, never a branch on a name. An
entry may be a "module:attribute" string, imported on first `get` (as lm-eval's `register_model(target=)`
and transformers' lazy auto-mappings): the names are then known without importing torch, so validating a
config and parsing the DAG stay light (ensemw2s/kinds.py).
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

from ensemw2s.errors import UserError

T = TypeVar("T")


class UnknownNameError(UserError, KeyError):
    """An unknown registry name; str() is one line that names the choices."""

    def __str__(self) -> str:  # KeyError quotes its message; we want a plain sentence
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            return self.add(name, entry)

        return decorator

    def get(self, name: str) -> T:
        try:
            entry = self._entries[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.kind, name, self._entries)) from None
        if isinstance(entry, str):  # a lazy target: import it once
            entry = self._entries[name] = load_target(entry)
        return entry

    def check(self, name: str, where: str) -> str:
        """`name` if registered, else a UserError naming `where` (a config key) and the choices."""
        if name not in self._entries:
            raise UnknownNameError(f"{where}: {unknown_name_message(self.kind, name, self._entries)}")
        return name

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def load_target(target: str):
    """The object a "module:attribute" target names (imported on the first call)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_plugin(path: str | Path) -> None:
    """Import a Python file that registers entries (a combine rule, a strategy, ...), once per process.

    The config's `plugins:` list names such files, so a researcher extends the suite without editing the
    package; every step loads them with the config, before names are checked.
    """
    path = Path(path).resolve()
    name = f"ensemw2s_plugin_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return
    if not path.is_file():
        raise UserError(f"config key plugins: {path} is not a file; list Python files that register entries")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def unknown_name_message(kind: str, name: str, known) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Known: {', '.join(known) or '(none)'}."
