"""Hostile input across the six commands: every case exits 2 with exactly one line on stderr, no traceback,
and leaves every file that existed before byte-for-byte unchanged (and creates none). Among them a crafted
checkpoint and a crafted CIFAR pickle that would create a sentinel file if linssl executed them.

The commands run in-process (``linssl.cli.main``); the interrupt cases, which need real processes, are
tests/test_interrupts.py. The machine's available memory is pinned to 16 GiB here, so the memory refusals
do not depend on the machine that runs the tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from linssl import memory
from linssl.cli import main as cli_main
from linssl.deep.checkpoint import FORMAT, rng_state
from linssl.deep.config import DeepConfig, build_online
from linssl.deep.models import make_target

GIB = 2**30
PINNED_MEMORY = 16 * GIB


class Payload:
    """Pickles as a call of ``open(path, 'w')``: unpickling it unrestricted creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _npy_header(shape, descr: str = "<f8") -> bytes:
    """A .npy 1.0 header declaring ``shape`` (for files whose data does not match it)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _tiny_cfg(run: Path, **overrides) -> DeepConfig:
    values = dict(dataset="digits", arch="small", width=4, proj_hidden=16, proj_dim=8, pred_hidden=16, epochs=2,
                  batch_size=256, knn_k=10, probe_epochs=5, progress=False, out=str(run), workers=0)
    values.update(overrides)
    return DeepConfig(**values).resolve()


def _checkpoint(cfg: DeepConfig, net_cfg: DeepConfig | None = None) -> dict:
    """A checkpoint of the current format for ``cfg`` whose weights come from ``net_cfg`` (default: cfg)."""
    online = build_online(net_cfg or cfg, 1)
    # an SGD state before its first step, written out: building a torch optimizer imports torch._dynamo (seconds)
    optimizer = {"state": {}, "param_groups": [{"lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.wd,
                                                "params": list(range(len(list(online.parameters()))))}]}
    return {"format": FORMAT, "online": online.state_dict(), "target": make_target(online).state_dict(),
            "optimizer": optimizer, "epoch": 1, "step": 5, "rng": rng_state(), "metrics": [], "wall_seconds": 1.0,
            "config": dataclasses.asdict(cfg)}


def _run_folder(root: Path, name: str, checkpoint_bytes: bytes | None, cfg_overrides: dict | None = None) -> Path:
    """A deep-train run folder: config.json (so --resume gets past its settings) and checkpoint.pt."""
    run = root / name
    run.mkdir()
    cfg = _tiny_cfg(run, **(cfg_overrides or {}))
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    if checkpoint_bytes is not None:
        (run / "checkpoint.pt").write_bytes(checkpoint_bytes)
    return run


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Every hostile file the cases refer to, in one folder (W)."""
    w = tmp_path_factory.mktemp("hostile")
    (w / "folder").mkdir()
    (w / "blocked" / "01_gains.png").mkdir(parents=True)  # where figures would write 01_gains.png
    (w / "file.txt").write_text("a plain file\n")
    os.mkfifo(w / "fifo")
    np.save(w / "good.npy", np.eye(2))
    np.save(w / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(w / "complex.npy", np.eye(2) * (1 + 2j))
    # an object array as numpy writes one: the header declares dtype object, a pickle follows (never unpickled
    # here or by linssl; written from its opcodes so that nothing in the tests needs allow_pickle)
    (w / "object.npy").write_bytes(_npy_header((2, 2), "|O") + pickle.dumps([1, None, None, 1]))
    np.save(w / "cube.npy", np.zeros((2, 2, 2)))
    np.save(w / "vector.npy", np.ones(3))
    np.save(w / "wide.npy", np.zeros((2, 3)))
    np.save(w / "bool.npy", np.eye(2, dtype=bool))
    np.save(w / "record.npy", np.zeros((2, 2), dtype=[("a", "<f8")]))
    np.save(w / "asym.npy", np.array([[1.0, 2.0], [0.0, 1.0]]))
    (w / "huge.npy").write_bytes(_npy_header((100_000, 100_000)) + b"\0" * 64)  # declares 80 GB
    (w / "short.npy").write_bytes(_npy_header((2, 2)) + b"\0" * 8)  # 8 of 32 bytes
    (w / "fake.npy").write_text("1 0\n0 1\n")
    (w / "empty.txt").write_text("")
    (w / "comments.txt").write_text("# only a comment\n\n")
    (w / "complex.txt").write_text("1+2j 0\n0 1\n")
    (w / "strings.txt").write_text("one zero\nzero one\n")
    (w / "ragged.txt").write_text("1 0\n0\n")
    (w / "nan.txt").write_text("nan 0\n0 1\n")
    (w / "overflow.txt").write_text("1e999 0\n0 1\n")
    (w / "latin1.txt").write_bytes("1 0\n0 1 # \xe9\n".encode("latin-1"))
    with open(w / "sparse.txt", "wb") as fh:  # 65 MiB, sparse: over the text-matrix limit
        fh.truncate(65 * 2**20)
    (w / "latin1.toml").write_bytes('dataset = "digits" # caf\xe9\n'.encode("latin-1"))
    (w / "deep.toml").write_text("crop_scale = " + "[" * 100_000)  # nesting beyond Python's recursion limit
    (w / "nested_run").mkdir()
    (w / "nested_run" / "config.json").write_text("[" * 100_000)
    (w / "nested_metrics").mkdir()
    (w / "nested_metrics" / "metrics.jsonl").write_text("[" * 100_000 + "\n")
    # runs for figures --run
    bad_runs = {"badrun_bytes": b"\xff\xfe\n", "badrun_types": b'{"epoch": 1, "F_eigenvalues": "abc"}\n'}
    for name, text in bad_runs.items():
        (w / name).mkdir()
        (w / name / "metrics.jsonl").write_bytes(text)
    # CIFAR data whose first batch is a pickle that would create a sentinel
    cifar = w / "cifar_evil" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    (cifar / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload(w / "SENTINEL_cifar"), b"labels": [0]}))
    # checkpoints
    cfg = _tiny_cfg(w / "x")
    _run_folder(w, "evil_run", _torch_bytes({"format": FORMAT, "online": Payload(w / "SENTINEL_ckpt")}))
    _run_folder(w, "tensor_run", _torch_bytes(torch.zeros(3)))
    _run_folder(w, "old_run", _torch_bytes({**_checkpoint(cfg), "format": None,
                                            "rng": {"numpy": np.random.get_state()}}))
    _run_folder(w, "version_run", _torch_bytes({**_checkpoint(cfg), "format": "linssl-checkpoint/1"}))
    _run_folder(w, "keys_run", _torch_bytes({k: v for k, v in _checkpoint(cfg).items() if k != "optimizer"}))
    _run_folder(w, "rng_run", _torch_bytes({**_checkpoint(cfg), "rng": {"torch": torch.zeros(3)}}))
    _run_folder(w, "truncated_run", _torch_bytes(_checkpoint(cfg))[:2000])
    legacy = io.BytesIO()
    torch.save(_checkpoint(cfg), legacy, _use_new_zipfile_serialization=False)
    _run_folder(w, "legacy_run", legacy.getvalue())
    bomb = io.BytesIO()  # 10⁷ zeros deflated: torch.load would inflate 40 KB into 40 MB (any ratio is possible)
    with zipfile.ZipFile(io.BytesIO(_torch_bytes({**_checkpoint(cfg), "pad": torch.zeros(10**7)}))) as src, \
            zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry.filename))
    _run_folder(w, "bomb_run", bomb.getvalue())
    _run_folder(w, "shape_run", _torch_bytes(_checkpoint(cfg, dataclasses.replace(cfg, width=8))))
    huge = _tiny_cfg(w / "x", width=10**9)
    _run_folder(w, "huge_run", _torch_bytes(_checkpoint(huge, cfg)), {"width": 10**9})
    (_run_folder(w, "ckptdir_run", None) / "checkpoint.pt").mkdir()
    return w


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: the sha256 of a regular file's bytes (size, mtime and inode for the one
    65 MiB sparse file, which any write would change), the kind of anything else (never opened)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            out[str(path)] = "special"
        elif path.is_dir():
            out[str(path)] = "folder"
        elif path.stat().st_size > 2**20:
            st = path.stat()
            out[str(path)] = f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"
        else:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


S, C, F, N, D, E = "simulate", "check", "figures", "sample-complexity", "deep-train", "deep-eval"
TRAIN = ["--dataset", "digits", "--arch", "small", "--width", "4", "--proj-hidden", "16", "--proj-dim", "8",
         "--epochs", "1", "--batch-size", "256", "--no-progress", "--workers", "0"]
COV = ["--aug-cov", "W/good.npy", "--data-cov"]
RESUME = ["--no-progress", "--resume", "--out"]
#: /proc/self accepts no new file: ENOENT for root, EACCES for anyone else; both name the folder
PROC = "cannot create files in /proc/self"

#: (id, argv with W for the world folder, a fragment the one error line must hold)
CASES = [
    # simulate: lists, sizes, outputs
    ("sim-empty-item", [S, "--aug-var", "0.1,,1"], "empty items"),
    ("sim-trailing-comma", [S, "--aug-var", "0.1,1,"], "empty items"),
    ("sim-empty-data-var-item", [S, "--data-var", "1,,1", "--aug-var", "0.1,1,2"], "empty items"),
    ("sim-empty-list", [S, "--aug-var", ""], "empty items"),
    ("sim-nan-in-list", [S, "--aug-var", "nan,1"], "finite"),
    ("sim-complex-in-list", [S, "--aug-var", "1+2j,1"], "numbers"),
    ("sim-huge-dim", [S, "--dim", "2000000000"], "--dim must be between"),
    ("sim-zero-dim", [S, "--dim", "0"], "--dim must be between"),
    ("sim-sgd-huge-batch", [S, "--mode", "sgd", "--batch", str(10**12)], "--batch"),
    ("sim-sgd-batch-times-dim", [S, "--mode", "sgd", "--dim", "1024", "--batch", str(10**8)], "GiB"),
    ("sim-json-empty", [S, "--json", ""], "--json is empty"),
    ("sim-json-equals-plot", [S, "--json", "W/r.png", "--plot", "W/r.png"], "same file"),
    ("sim-json-in-proc", [S, "--json", "/proc/self/linssl.json"], PROC),
    ("sim-json-folder", [S, "--json", "W/folder"], "it is a folder"),
    ("sim-json-fifo", [S, "--json", "W/fifo"], "not a regular file"),
    ("sim-json-under-file", [S, "--json", "W/file.txt/r.json"], "not a folder"),
    ("sim-plot-suffix", [S, "--plot", "W/r.xyz"], "cannot save a figure"),
    ("sim-wd-text", [S, "--wd", "abc"], "invalid float"),
    ("sim-vanishing-lr", [S, "--mode", "gd", "--lr", "5e-324"], "too small"),
    ("sim-tiny-lr-steps", [S, "--mode", "sgd", "--lr", "1e-30"], "steps must be between"),
    ("sim-huge-steps", [S, "--mode", "gd", "--steps", "1" + "0" * 400], "more than 1e300"),
    # simulate: matrix files
    ("npy-strings", [S, *COV, "W/strings.npy"], "real numbers"),
    ("npy-complex", [S, *COV, "W/complex.npy"], "complex128"),
    ("npy-object", [S, *COV, "W/object.npy"], "object"),
    ("npy-3d", [S, *COV, "W/cube.npy"], "3-D"),
    ("npy-1d", [S, *COV, "W/vector.npy"], "1-D"),
    ("npy-not-square", [S, *COV, "W/wide.npy"], "square"),
    ("npy-bool", [S, *COV, "W/bool.npy"], "bool"),
    ("npy-record", [S, *COV, "W/record.npy"], "real numbers"),
    ("npy-huge-header", [S, *COV, "W/huge.npy"], "d <= 1024"),
    ("npy-truncated", [S, *COV, "W/short.npy"], "header promises"),
    ("npy-not-npy", [S, *COV, "W/fake.npy"], "not a valid .npy"),
    ("npy-asymmetric", [S, *COV, "W/asym.npy"], "symmetric"),
    ("matrix-dev-zero", [S, *COV, "/dev/zero"], "is a device"),
    ("matrix-fifo", [S, *COV, "W/fifo"], "is a named pipe"),
    ("matrix-folder", [S, *COV, "W/folder"], "is a folder, not a file"),
    ("matrix-missing", [S, *COV, "W/missing.npy"], "does not exist"),
    ("text-empty", [S, *COV, "W/empty.txt"], "holds no numbers"),
    ("text-only-comments", [S, *COV, "W/comments.txt"], "holds no numbers"),
    ("text-complex", [S, *COV, "W/complex.txt"], "not a real number"),
    ("text-strings", [S, *COV, "W/strings.txt"], "not a real number"),
    ("text-ragged", [S, *COV, "W/ragged.txt"], "line 2"),
    ("text-nan", [S, *COV, "W/nan.txt"], "not a real number"),
    ("text-overflow", [S, *COV, "W/overflow.txt"], "non-finite"),
    ("text-not-utf8", [S, *COV, "W/latin1.txt"], "not UTF-8"),
    ("text-too-large", [S, *COV, "W/sparse.txt"], "bytes"),
    ("matrix-only-one", [S, "--data-cov", "W/good.npy"], "give both"),
    ("matrix-with-dim", [S, *COV, "W/good.npy", "--dim", "2"], "cannot be combined"),
    # check
    ("check-empty-item", [C, "--only", "threshold,,gains"], "empty items"),
    ("check-empty-only", [C, "--only", ""], "empty items"),
    ("check-unknown", [C, "--only", "nosuch"], "unknown check"),
    ("check-json-empty", [C, "--list", "--json", ""], "--json is empty"),
    ("check-json-in-proc", [C, "--list", "--json", "/proc/self/c.json"], PROC),
    ("check-json-folder", [C, "--list", "--json", "W/folder"], "it is a folder"),
    ("check-unknown-flag", [C, "--bogus"], "unrecognized arguments"),
    # figures
    ("fig-trailing-comma", [F, "--only", "gains,", "--out", "W/figs"], "empty items"),
    ("fig-unknown", [F, "--only", "nosuch", "--out", "W/figs"], "unknown figure"),
    ("fig-out-file", [F, "--only", "gains", "--out", "W/file.txt"], "is a file, not a folder"),
    ("fig-out-empty", [F, "--only", "gains", "--out", ""], "--out is empty"),
    ("fig-out-in-proc", [F, "--only", "gains", "--out", "/proc/self/figs"], PROC),
    ("fig-run-file", [F, "--only", "deep_run", "--run", "W/file.txt", "--out", "W/figs"], "is a file, not a folder"),
    ("fig-run-missing", [F, "--only", "deep_run", "--run", "W/nowhere", "--out", "W/figs"], "does not exist"),
    ("fig-run-not-utf8", [F, "--only", "deep_run", "--run", "W/badrun_bytes", "--out", "W/figs"], "not UTF-8"),
    ("fig-run-wrong-types", [F, "--only", "deep_run", "--run", "W/badrun_types", "--out", "W/figs"], "wrong type"),
    ("fig-run-nested", [F, "--only", "deep_run", "--run", "W/nested_metrics", "--out", "W/figs"], "not JSON"),
    ("fig-output-is-folder", [F, "--only", "gains", "--out", "W/blocked"], "01_gains.png: it is a folder"),
    # sample-complexity
    ("sc-empty-item", [N, "--n", "100,,200"], "empty items"),
    ("sc-trailing-comma", [N, "--n", "100,"], "empty items"),
    ("sc-text", [N, "--n", "abc"], "--n"),
    ("sc-fraction", [N, "--n", "100,2.5"], "--n"),
    ("sc-json-empty", [N, "--json", ""], "--json is empty"),
    ("sc-json-equals-plot", [N, "--json", "W/s.png", "--plot", "W/s.png"], "same file"),
    ("sc-json-in-proc", [N, "--json", "/proc/self/s.json"], PROC),
    ("sc-plot-fifo", [N, "--plot", "W/fifo"], "not a regular file"),
    ("sc-memory", [N, "--dim", "14000", "--seeds", "2", "--n", "14002"], "GiB"),
    ("sc-too-many-numbers", [N, "--seeds", str(10**9)], "exceeds"),
    ("sc-vanishing-wd", [N, "--wd", "1e-200"], "well conditioned"),
    ("sc-subnormal-noise", [N, "--noise", "1e-320"], "noise must be"),
    ("sc-vanishing-target", [N, "--target-risk", "1e-320"], "target risk must be at least"),
    # deep-train: files and folders
    ("train-config-not-utf8", [D, *TRAIN, "--config", "W/latin1.toml", "--out", "W/new"], "not UTF-8"),
    ("train-config-nested", [D, *TRAIN, "--config", "W/deep.toml", "--out", "W/new"], "nests deeper"),
    ("train-resume-nested-json", [D, *RESUME, "W/nested_run"], "not valid JSON"),
    ("train-config-folder", [D, *TRAIN, "--config", "W/folder", "--out", "W/new"], "is a folder, not a file"),
    ("train-config-device", [D, *TRAIN, "--config", "/dev/zero", "--out", "W/new"], "is a device"),
    ("train-config-missing", [D, *TRAIN, "--config", "W/none.toml", "--out", "W/new"], "does not exist"),
    ("train-data-dir-file", [D, *TRAIN, "--dataset", "cifar10", "--data-dir", "W/file.txt", "--out", "W/new"],
     "is a file, not a folder"),
    ("train-evil-cifar", [D, *TRAIN, "--dataset", "cifar10", "--data-dir", "W/cifar_evil", "--out", "W/new"],
     "cannot read CIFAR file"),
    ("train-out-file", [D, *TRAIN, "--out", "W/file.txt"], "is a file, not a folder"),
    ("train-out-fifo", [D, *TRAIN, "--out", "W/fifo"], "is a named pipe, not a folder"),
    ("train-out-in-proc", [D, *TRAIN, "--out", "/proc/self/run"], PROC),
    ("train-resume-file", [D, *RESUME, "W/file.txt"], "is a file, not a folder"),
    # deep-train: checkpoints
    ("train-evil-checkpoint", [D, *RESUME, "W/evil_run"], "never loaded"),
    ("train-tensor-checkpoint", [D, *RESUME, "W/tensor_run"], "holds a Tensor"),
    ("train-old-checkpoint", [D, *RESUME, "W/old_run"], "before format 2"),
    ("train-other-version", [D, *RESUME, "W/version_run"], "linssl-checkpoint/1"),
    ("train-missing-key", [D, *RESUME, "W/keys_run"], "'optimizer' is missing"),
    ("train-bad-rng", [D, *RESUME, "W/rng_run"], "RNG state"),
    ("train-truncated-checkpoint", [D, *RESUME, "W/truncated_run"], "cannot read checkpoint"),
    ("train-wrong-shapes", [D, *RESUME, "W/shape_run"], "does not fit"),
    ("train-legacy-format", [D, *RESUME, "W/legacy_run"], "not a complete torch.save archive"),
    ("train-zip-bomb", [D, *RESUME, "W/bomb_run"], "compressed entries"),
    ("train-checkpoint-folder", [D, *RESUME, "W/ckptdir_run"], "is a folder, not a file"),
    # deep-train: sizes
    ("train-proj-hidden", [D, *TRAIN, "--proj-hidden", str(10**12), "--out", "W/new"], "--proj-hidden"),
    ("train-proj-dim", [D, *TRAIN, "--proj-dim", str(10**6), "--out", "W/new"], "GiB"),
    ("train-width", [D, *TRAIN, "--width", str(10**9), "--out", "W/new"], "--width"),
    ("train-batch", [D, *TRAIN, "--batch-size", str(10**9), "--out", "W/new"], "--batch-size"),
    ("train-workers", [D, *TRAIN, "--workers", str(10**8), "--out", "W/new"], "--workers must be between"),
    ("train-endless-warmup", [D, *TRAIN, "--warmup-epochs", "1e308", "--out", "W/new"], "beyond any run"),
    # deep-eval
    ("eval-evil-checkpoint", [E, "W/evil_run"], "never loaded"),
    ("eval-tensor-checkpoint", [E, "W/tensor_run"], "holds a Tensor"),
    ("eval-old-checkpoint", [E, "W/old_run"], "before format 2"),
    ("eval-other-version", [E, "W/version_run"], "linssl-checkpoint/1"),
    ("eval-truncated", [E, "W/truncated_run"], "cannot read checkpoint"),
    ("eval-wrong-shapes", [E, "W/shape_run"], "does not fit"),
    ("eval-zip-bomb", [E, "W/bomb_run"], "compressed entries"),
    ("eval-huge-config", [E, "W/huge_run"], "GiB"),
    ("eval-checkpoint-folder", [E, "W/ckptdir_run"], "is a folder, not a file"),
    ("eval-run-file", [E, "W/file.txt"], "is a file, not a folder"),
    ("eval-run-device", [E, "/dev/null"], "is a device, not a folder"),
    ("eval-run-missing", [E, "W/nowhere"], "does not exist"),
    ("eval-no-checkpoint", [E, "W/folder"], "no checkpoint"),
]


@pytest.fixture(autouse=True)
def pinned_memory(monkeypatch):
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: PINNED_MEMORY)


def test_the_table_covers_every_command_with_enough_cases():
    commands = {argv[0] for _, argv, _ in CASES}
    assert commands == {S, C, F, N, D, E} and len(CASES) >= 60
    assert len({name for name, _, _ in CASES}) == len(CASES)


#: cases that load the digits images and build an optimizer first (imports of seconds): in the slow job
SLOW_CASES = {"train-wrong-shapes"}


@pytest.mark.parametrize(("argv", "fragment"), [
    pytest.param(a, f, id=i, marks=[pytest.mark.slow] if i in SLOW_CASES else []) for i, a, f in CASES])
def test_hostile_input_is_one_line_exit_2_and_changes_nothing(world, capsys, argv, fragment):
    argv = [a.replace("W/", f"{world}/") if a.startswith("W/") else (str(world) if a == "W" else a) for a in argv]
    before = snapshot(world)
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (err, out)
    assert err.count("\n") == 1 and err.endswith("\n"), err  # exactly one line, no warning before it
    assert "Traceback" not in err and "error" in err
    assert fragment in err, err
    assert snapshot(world) == before  # nothing written, nothing changed, no temporary file left
    assert not (world / "SENTINEL_ckpt").exists() and not (world / "SENTINEL_cifar").exists()


def _reduced_calls(stream: bytes) -> list[str]:
    """The callables a pickle stream would call on unpickling (the global each REDUCE applies), read from its
    opcodes with ``pickletools`` — the stream is inspected, never run."""
    import pickletools

    strings, stack, calls = [], [], []
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            stack.append(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            stack.append(".".join(strings[-2:]))
        elif op.name == "REDUCE" and stack:
            calls.append(stack[-1])
    return calls


def test_the_payloads_would_run_code_under_a_plain_unpickler():
    """The crafted files above call ``open(path, 'w')`` when unpickled without restriction (seen in their
    opcodes, not by running them): the cases are not vacuous."""
    with zipfile.ZipFile(io.BytesIO(_torch_bytes({"online": Payload("/nonexistent/ran")}))) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert "io.open" in _reduced_calls(data) or "builtins.open" in _reduced_calls(data)
    calls = _reduced_calls(pickle.dumps({b"data": Payload("/nonexistent/ran")}))
    assert "io.open" in calls or "builtins.open" in calls


def test_warnings_of_a_failing_command_do_not_reach_stderr(tmp_path, capsys, monkeypatch):
    """A library warning before the error (numpy's empty-file UserWarning, say) is dropped; one that a
    completed run raises is still shown."""
    import warnings

    from linssl.cli import run_guarded
    from linssl.errors import LinsslError

    def failing(_):
        warnings.warn("library noise", UserWarning, stacklevel=1)
        raise LinsslError("the one line")

    assert run_guarded(failing, None, "linssl x") == 2
    assert capsys.readouterr().err == "linssl x: error: the one line\n"

    def passing(_):
        warnings.warn("shown at the end", UserWarning, stacklevel=1)
        return 0

    with pytest.warns(UserWarning, match="shown at the end"):
        assert run_guarded(passing, None, "linssl x") == 0


def test_memory_estimates_refuse_only_what_cannot_fit():
    from linssl.errors import LinsslError

    # the default simulator run and the default deep recipe fit easily; a batch of 10¹² does not
    assert memory.simulation_bytes(8, 8, "flow", 128) < 2**20
    assert memory.simulation_bytes(8, 8, "sgd", 10**12) > 1e14
    cfg = DeepConfig(dataset="stl10", out="x").resolve()
    params = memory.network_parameters(cfg, 3)
    assert 11e6 < params < 13e6  # ResNet-18 (11.2 M) + projector 512 -> 512 -> 128 + F̂ buffers
    assert memory.deep_training_bytes(cfg, 3, 96) < 1 * GIB
    assert memory.network_parameters(dataclasses.replace(cfg, arch="small", width=10**12), 3) == float("inf")
    memory.check_fits(GIB, "x", "lower it", available=2 * GIB)
    with pytest.raises(LinsslError, match="about 3 GiB of memory, more than the 2 GiB available; lower it"):
        memory.check_fits(3 * GIB, "x", "lower it", available=2 * GIB)
    with pytest.raises(LinsslError, match="more than 10⁹ GiB"):
        memory.check_fits(float("inf"), "x", "lower it", available=2 * GIB)


def test_a_checkpoint_round_trips_with_weights_only(tmp_path):
    """What deep-train saves loads with weights_only=True and restores every RNG exactly."""
    import random

    from linssl.deep.checkpoint import load_checkpoint, save_checkpoint, set_rng_state

    cfg = _tiny_cfg(tmp_path)
    state = _checkpoint(cfg)
    state.pop("format")
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    loaded = load_checkpoint(tmp_path / "checkpoint.pt")
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


# --------------------------------------------------------------------------- what the strict readers still accept


def test_read_matrix_reads_every_real_npy_layout_and_plain_text(tmp_path):
    from linssl.io import read_matrix

    A = np.arange(9.0).reshape(3, 3) / 7
    for name, array in {"c.npy": A, "f.npy": np.asfortranarray(A), "be.npy": A.astype(">f8"),
                        "f32.npy": A.astype(np.float32), "int.npy": np.arange(9).reshape(3, 3)}.items():
        np.save(tmp_path / name, array)
        got = read_matrix(tmp_path / name, "--x", 3)
        assert got.dtype == np.float64 and np.array_equal(got, np.asarray(array, dtype=np.float64)), name
    np.savetxt(tmp_path / "a.txt", A, header="a comment")
    (tmp_path / "b.txt").write_text("1 -2.5e-3  .5  # row 1\n\n+3 4. 5E2\n6 7 8\n")
    assert np.array_equal(read_matrix(tmp_path / "a.txt", "--x", 3), A)  # savetxt's %.18e round-trips exactly
    assert read_matrix(tmp_path / "b.txt", "--x", 3).tolist() == [[1, -2.5e-3, 0.5], [3, 4, 500], [6, 7, 8]]


def test_parse_list_accepts_spaces_and_integer_spellings():
    from linssl.errors import LinsslError
    from linssl.io import parse_list

    assert parse_list(" 0.1, 2 ,1e-3", "--x") == (0.1, 2.0, 1e-3)
    assert parse_list("100, 1e3", "--n", int) == (100, 1000)
    assert parse_list("gains,phase", "--only", str) == ("gains", "phase")
    for bad, kind in (("1,,2", float), (",", str), ("1.5", int), ("inf", float), ("1e999", int)):
        with pytest.raises(LinsslError, match="--x"):
            parse_list(bad, "--x", kind)
