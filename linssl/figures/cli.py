"""Regenerate every figure of the toolkit from data it computes: DIR/NN_name.png and .pdf.

``linssl figures [--out DIR] [--quick] [--only NAME[,NAME]] [--run RUN_DIR]``; one printed line per
figure with its path and seconds. Figure 9 (a deep run) needs ``--run``; without it, it is skipped.
``linssl figures --compare DIR`` only redraws DIR/compare.png and .pdf of a ``linssl compare`` run.
"""

from __future__ import annotations

import argparse
import time
from functools import cache
from pathlib import Path

from linssl.errors import LinsslError

DEFAULT_OUT = "figures/out"


def configure(parser: argparse.ArgumentParser) -> None:
    from linssl.figures import FIGURES

    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT}/)")
    parser.add_argument("--quick", action="store_true", help="smaller grids: every figure in under a minute")
    parser.add_argument("--only", default=None, metavar="NAME[,NAME]",
                        help=f"only these figures: {', '.join(FIGURES)}")
    parser.add_argument("--run", default=None, metavar="RUN_DIR",
                        help="folder of a linssl deep-train run, for figure 9 (spectrum of F̂, accuracy)")
    parser.add_argument("--compare", default=None, metavar="DIR",
                        help="only redraw DIR/compare.png and .pdf from DIR/compare.json (linssl compare)")


def selected(only: str | None) -> list[str]:
    """Figure names in file order; ``only`` is a comma list of registry names."""
    from linssl.figures import FIGURES

    if only is None:
        return list(FIGURES)
    from linssl.io import parse_list

    names = parse_list(only, "--only", str)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        wrong = ", ".join(unknown)
        raise LinsslError(f"--only: unknown figure {wrong}; choose from {', '.join(FIGURES)}")
    return [n for n in FIGURES if n in names]


def make_figure(name: str, out: str | Path, quick: bool = False, run_dir: str | None = None) -> list[Path]:
    """Compute one figure's data, plot it, write ``out/NN_name.png`` and ``.pdf``; return the paths."""
    from linssl.figures import FIGURES
    from linssl.figures.style import save

    fig_def = FIGURES[name]
    data = read_run(run_dir, quick) if fig_def.needs_run else figure_data(name, quick)
    return save(fig_def.plot(data), out, fig_def.stem)


@cache
def figure_data(name: str, quick: bool = False):
    """The computed data of a linear-theory figure (cached: it depends only on ``name`` and ``quick``).

    Torch runs on one thread: the work is tiny batched problems, where threads only contend on a
    shared machine (measured: the phase sweep 1.7 s on one thread, 66 s on two busy ones).
    """
    from linssl.figures import FIGURES
    from linssl.runtime import one_thread

    fig_def = FIGURES[name]
    if fig_def.needs_run:
        raise LinsslError(f"figure {name} reads a deep training run: add --run RUN_DIR")
    with one_thread():
        return fig_def.compute(quick)


def read_run(run_dir: str | None, quick: bool = False):
    """The data of the deep-run figure (never cached: the run folder may grow)."""
    from linssl.figures.deep_run import compute_deep_run

    if run_dir is None:
        raise LinsslError("figure deep_run reads a deep training run: add --run RUN_DIR")
    return compute_deep_run(run_dir, quick)


def run(args: argparse.Namespace) -> int:
    from linssl.figures import FIGURES
    from linssl.figures.style import FORMATS
    from linssl.io import check_output_folder, check_output_path

    if args.compare is not None:
        from linssl.compare.figure import write_compare_figure

        paths = write_compare_figure(args.compare)
        print(f"compare: {paths[0]} (+ .pdf)")
        return 0
    names = selected(args.only)
    if args.run is not None:
        read_run(args.run)  # a bad RUN_DIR fails before minutes of computing
    out = check_output_folder(args.out, "--out")
    for name in names:  # every file this run will write, before minutes of computing
        for fmt in FORMATS:
            check_output_path(out / f"{FIGURES[name].stem}.{fmt}")
    total = time.perf_counter()
    for name in names:
        fig_def = FIGURES[name]
        if fig_def.needs_run and args.run is None:
            if args.only is not None:
                raise LinsslError(f"figure {name} reads a deep training run: add --run RUN_DIR")
            print(f"{fig_def.stem}: skipped (give --run RUN_DIR of a linssl deep-train run)", flush=True)
            continue
        start = time.perf_counter()
        paths = make_figure(name, out, args.quick, args.run)
        print(f"{fig_def.stem}: {paths[0]} (+ .pdf) in {time.perf_counter() - start:.1f} s", flush=True)
    print(f"all figures in {time.perf_counter() - total:.1f} s ({'quick' if args.quick else 'full'} mode)")
    return 0
