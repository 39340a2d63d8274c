"""``python -m theory_checks`` = ``linssl check``."""

from linssl.cli import command_main

if __name__ == "__main__":
    raise SystemExit(command_main("theory_checks.cli", "python -m theory_checks"))
