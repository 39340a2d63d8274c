"""Atomic output and the top-level command."""

import json
import os
import subprocess
import sys

import pytest

from linssl.io import atomic_write, write_json


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"a": 1})

    def broken(tmp):
        with open(tmp, "w") as fh:
            fh.write('{"half": ')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left behind


def test_written_files_get_the_usual_mode(tmp_path):
    path = write_json(tmp_path / "x.json", {"b": [1.5]})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"bad": float("nan")})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["nonsense"], []])
def test_linssl_unknown_or_missing_command(args):
    proc = subprocess.run([sys.executable, "-m", "linssl.cli", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_linssl_help_lists_every_command():
    from linssl.cli import COMMANDS

    proc = subprocess.run([sys.executable, "-m", "linssl.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for name in COMMANDS:
        assert name in proc.stdout


def test_unwritable_output_is_a_one_line_error(tmp_path, capsys):
    from linssl.cli import command_main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = command_main("linssl.simulate", "linssl simulate", ["--aug-var", "0.2,6", "--json", str(blocker / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot write" in err


def test_a_prefix_of_a_flag_is_not_taken_for_the_flag(capsys):
    """`--out 4` on the simulator (whose flag is --out-dim) is an error, not a silent out_dim = 4."""
    from linssl.cli import command_main

    with pytest.raises(SystemExit) as exit_info:
        command_main("linssl.simulate", "linssl simulate", ["--aug-var", "0.2,6", "--out", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "unrecognized arguments: --out 1" in err


def test_linssl_version():
    from linssl import __version__

    argv = [sys.executable, "-m", "linssl.cli", "--version"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"linssl {__version__}"


def test_number_and_seed_checks_take_numpy_scalars_and_refuse_huge_ints():
    import numpy as np

    from linssl.errors import LinsslError, check_number, check_seed

    check_number("--x", np.float32(0.5))
    check_number("--x", np.int64(3))
    check_seed("--seed", np.int64(7))
    for bad in (10**400, float("inf"), True, "1"):
        with pytest.raises(LinsslError, match="--x"):
            check_number("--x", bad)
    for bad in (-1, 2**63, 1.0, np.float64(2.0)):
        with pytest.raises(LinsslError, match="--seed"):
            check_seed("--seed", bad)
