"""Import a user's extension (a reward, a loss, an advantage estimator) named in the config.

A spec is "path/to/file.py:attr" (the config pins a relative file path to the working directory) or
"pkg.mod:attr" (importable where the code runs: driver, verifier or learner process). Only this module
turns a spec into an object, so every extension point reports a bad spec the same way, in one line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, TypeVar

from openrs_ray.backends import BACKENDS, CONFIG_KEYS, Role, check_backend

T = TypeVar("T")

__all__ = ["PluginError", "import_object", "is_spec", "load_backend", "load_callable"]


class PluginError(ValueError):
    """The extension cannot be used: not importable, not found, or not a function of the expected shape."""


def is_spec(value: str) -> bool:
    """True when `value` names an extension ("file.py:attr" or "pkg.mod:attr") rather than a built-in."""
    return ":" in value


def import_object(spec: str) -> Any:
    """The attribute `spec` names; a PluginError (one line) on any failure."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise PluginError(f"{spec!r}: expected 'file.py:function' or 'package.module:function'")
    try:
        module = _load_file(spec, target) if target.endswith(".py") else importlib.import_module(target)
    except PluginError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure importing user code is one line naming it
        raise PluginError(f"{spec!r}: cannot import: {type(err).__name__}: {err}") from None
    if not hasattr(module, attr):
        raise PluginError(f"{spec!r}: {target} has no attribute {attr!r}")
    return getattr(module, attr)


def _load_file(spec: str, target: str) -> Any:
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise PluginError(f"{spec!r}: file not found: {path}")
    # A stable private module name per file: the same file imports once per process.
    name = f"openrs_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise PluginError(f"{spec!r}: {path} is not a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # before running it, as import does (dataclasses and pickling look it up)
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_callable(spec: str, positional: int, what: str) -> Any:
    """Import `spec` and check it is a function taking at least `positional` positional arguments."""
    fn = import_object(spec)
    if not callable(fn):
        raise PluginError(f"{spec!r}: is a {type(fn).__name__}, not a function")
    params = list(inspect.signature(fn).parameters.values())
    n = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    if n < positional and not any(p.kind == p.VAR_POSITIONAL for p in params):
        raise PluginError(
            f"{spec!r}: must take {what}, has {getattr(fn, '__name__', 'function')}{inspect.signature(fn)}"
        )
    return fn


def resolve(table: dict[str, T], name: str, key: str, kind: str, positional: int, what: str) -> T:
    """The function registered in `table` as `name`, or the user function an import path names; a ValueError
    naming the config `key` (a bad path) or the `kind` of name (an unknown one) otherwise."""
    if is_spec(name):
        try:
            return load_callable(name, positional, what)
        except PluginError as err:
            raise ValueError(f"{key}: {err}") from None
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(table)} or 'file.py:function'")
    return table[name]


def load_backend(role: Role, name: str, abc: type) -> type:
    """Import the class `name` selects for `role` (openrs_ray.backends) and check it subclasses `abc`, the role's
    actor ABC (passed in by the caller, so that this low layer imports no role package)."""
    from openrs_ray.config import ConfigError

    key = CONFIG_KEYS[role]
    try:
        check_backend(role, name)
        cls = import_object(BACKENDS[role].get(name, name))
    except ValueError as err:  # an unknown name, or a PluginError (a ValueError) from the import
        raise ConfigError(f"{key}: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, abc)):
        raise ConfigError(f"{key}: {name!r} is not a subclass of {abc.__module__}.{abc.__name__}")
    return cls
