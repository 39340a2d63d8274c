"""Run every theory check: prints predicted vs measured per check and exits 1 if any check fails.

``linssl check [--quick] [--only NAME[,NAME]] [--json PATH] [--list]``: each check runs the simulator,
compares it with the closed form under a stated tolerance and reports PASS/FAIL; ``--quick`` runs
smaller versions of every check (under a minute in total).
"""

from __future__ import annotations

import argparse

from linssl.errors import LinsslError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="smaller runs of every check (under a minute)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these checks (see --list)")
    parser.add_argument("--json", metavar="PATH", help="write {'checks': [...], 'passed': bool} (atomically)")
    parser.add_argument("--list", action="store_true", help="list the checks and their claims, then exit")


def selected_names(only: str | None) -> list[str] | None:
    """``None`` (all) or the checked names of ``--only``."""
    from theory_checks import CHECKS

    if only is None:
        return None
    from linssl.io import parse_list

    names = list(parse_list(only, "--only", str))
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise LinsslError(f"unknown check(s) {', '.join(unknown)} in --only; choose from {', '.join(CHECKS)}")
    return names


def run(args: argparse.Namespace) -> int:
    from linssl.io import check_output_path, write_json
    from theory_checks import CHECKS, format_table, report, run_checks

    names = selected_names(args.only)
    if args.json is not None:
        check_output_path(args.json, flag="--json")
    if args.list:
        for name, check in CHECKS.items():
            print(f"{name:<12} {(check.__doc__ or '').strip().splitlines()[0]}")
        return 0
    results = run_checks(names, quick=args.quick)
    print(format_table(results))
    if args.json is not None:
        write_json(args.json, report(results))
    return 0 if all(r.passed for r in results) else 1
