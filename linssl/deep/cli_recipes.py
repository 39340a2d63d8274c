"""``linssl recipes``: list the reference recipes of ``deep-train --recipe`` with their sources, or print one."""

from __future__ import annotations

import argparse

from linssl.deep.recipes import load_recipe, recipe_names


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=None,
                        help="print this recipe's file (every value with its source) instead of the list")


def run(args: argparse.Namespace) -> int:
    if args.name is not None:
        print(load_recipe(args.name).text, end="")
        return 0
    recipes = [load_recipe(name) for name in recipe_names()]
    width = max(len(r.name) for r in recipes)
    for r in recipes:
        print(f"{r.name:<{width}}  {r.description}")
        print(f"{'':<{width}}  source: {r.source}")
    print("use: linssl deep-train --recipe NAME --data-dir DATA --out RUN_DIR   (flags override the recipe; "
          "--print-config shows the result)")
    return 0
