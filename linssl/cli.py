"""The ``linssl`` command: one subcommand per face of the toolkit.

Each subcommand lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
this file only maps names to modules (imported lazily, so ``linssl simulate`` never imports torch
vision code or matplotlib it does not need). User errors (``LinsslError``) and argparse errors
become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable, Sequence

from linssl import __version__
from linssl.errors import LinsslError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("linssl.simulate", "linear siamese network: flow / GD / SGD against the closed forms"),
    "check": ("theory_checks.cli", "verify every theorem prediction numerically"),
    "sample-complexity": ("linssl.sample_complexity", "downstream risk: learned representation vs raw input"),
    "figures": ("linssl.figures.cli", "regenerate every figure from computed data"),
    "deep-train": ("linssl.deep.cli_train", "train a ResNet with DirectCopy / DirectPred / ..."),
    "deep-eval": ("linssl.deep.cli_eval", "linear probe and kNN on a (finished or interrupted) run"),
    "headline": ("linssl.deep.cli_headline", "DirectCopy vs BYOL vs DirectPred, same budget -> results table"),
    "export": ("linssl.deep.cli_export", "write a run's backbone as a state_dict (torchvision ResNet names)"),
    "recipes": ("linssl.deep.cli_recipes", "the reference recipes of deep-train --recipe, with their sources"),
    "compare": ("linssl.compare.cli", "theory meets practice: predicted vs trained kept directions per weight decay"),
}


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 2, and which takes flags only as
    written: no prefixes, so ``--out`` never quietly means ``--out-dim``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    """Run a command, turning user errors into one line on stderr and exit code 2.

    Library warnings raised on the way are held back: a run that fails on bad input prints its one error
    line and nothing else; a run that completes shows them at its end."""
    with warnings.catch_warnings(record=True) as caught:
        try:
            code = int(func(args) or 0)
        except LinsslError as exc:
            sys.stderr.write(f"{prog}: error: {exc}\n")
            return 2
        except OSError as exc:  # a path the user gave: unreadable, unwritable, missing, disk full
            where = f" {exc.filename}" if exc.filename else ""
            sys.stderr.write(f"{prog}: error: {exc.strerror or exc}{':' if where else ''}{where}\n")
            return 2
        except MemoryError:  # an allocation the estimates of linssl.memory did not foresee
            sys.stderr.write(f"{prog}: error: out of memory; lower the sizes of the run\n")
            return 2
        except KeyboardInterrupt:
            sys.stderr.write(f"{prog}: interrupted\n")
            return 130
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    return code


def command_main(module_name: str, prog: str, argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m <module>``: parse with the module's flags and run it."""
    try:  # importing torch takes a second or two: Ctrl-C there is an interruption too, not a traceback
        module = importlib.import_module(module_name)
        parser = OneLineParser(prog=prog, description=(module.__doc__ or "").strip().splitlines()[0])
        module.configure(parser)
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    return run_guarded(module.run, args, prog)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = OneLineParser(prog="linssl", description="linssl: non-contrastive SSL theory and practice")
    top.add_argument("--version", action="version", version=f"linssl {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help", "--version") or argv[0] not in COMMANDS:
        top.parse_args(argv)  # prints help, or a one-line error for an unknown command
        return 0
    name = argv[0]
    return command_main(COMMANDS[name][0], f"linssl {name}", argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
