"""Modules that are also functions: ``linssl.simulate`` is the CLI module (``python -m linssl.simulate``)
and, called, the API function ``linssl.api.simulate``; the same for ``linssl.sample_complexity``.

Python sets ``linssl.simulate`` to the submodule as soon as anything imports it, so a function of the
same name could not stay there; giving the module a ``__call__`` keeps one name for both.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable
from typing import Any


def make_callable(module_name: str, function: Callable[..., Any]) -> None:
    """Make ``sys.modules[module_name]`` callable as ``function`` (its docstring and signature shown by help)."""
    module = sys.modules[module_name]

    class CallableModule(types.ModuleType):
        __doc__ = module.__doc__

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

    CallableModule.__call__.__doc__ = function.__doc__
    CallableModule.__call__.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    module.__class__ = CallableModule
