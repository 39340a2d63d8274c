"""Reference recipes: TOML files shipped in ``linssl/deep/recipes/``, one per published setup, every value
beside its source (docs/theory.md §6).

A recipe file holds ``description`` and ``source`` (one line each) and a ``[config]`` table whose keys
are ``DeepConfig`` fields. ``deep-train --recipe NAME`` layers it between the defaults and everything
the user gives: defaults < recipe < the run's own config.json (``--resume``) < ``--config`` TOML < flags.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

from linssl.errors import LinsslError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    source: str
    values: dict[str, Any]  # the [config] table: DeepConfig fields, checked where they are used (config_from_dict)
    text: str  # the file as shipped, comments included


def _folder():
    return resources.files("linssl.deep").joinpath("recipes")


def recipe_names() -> tuple[str, ...]:
    """Names of the shipped recipes (file names without ``.toml``), sorted."""
    return tuple(sorted(f.name[:-5] for f in _folder().iterdir() if f.name.endswith(".toml")))


def load_recipe(name: str) -> Recipe:
    """The recipe ``name`` as shipped (``LinsslError`` if unknown or not a recipe file). A part below
    ``config``: the values are checked when a config is made of them (tests check every shipped one)."""
    names = recipe_names()
    if name not in names:
        raise LinsslError(f"unknown recipe {name!r}; known recipes: {', '.join(names)}")
    text = _folder().joinpath(f"{name}.toml").read_text(encoding="utf-8")
    where = f"recipe {name}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # a shipped file: a packaging fault, still one line
        raise LinsslError(f"{where} is not valid TOML: {exc}") from None
    table = data.get("config")
    if not isinstance(table, dict) or not isinstance(data.get("source"), str):
        raise LinsslError(f"{where} needs a source line and a [config] table")
    return Recipe(name, str(data.get("description", "")), data["source"], table, text)
