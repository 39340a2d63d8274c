"""DDP on CPU (gloo, two processes): every rank ends with the same parameters and the same F̂.

SyncBatchNorm has no CPU implementation in torch, so --sync-bn is exercised only on CUDA.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from linssl.deep.config import DeepConfig
from linssl.deep.loop import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, predictor: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = DeepConfig(dataset="digits", arch="small", width=4, proj_hidden=16, proj_dim=8, pred_hidden=16, epochs=1,
                     batch_size=128, knn_k=10, probe_epochs=2, progress=False, workers=0, device="cpu",
                     predictor=predictor, out=str(Path(out) / "run"))
    result = train(cfg)
    torch.save({"online": result.online.state_dict(), "target": result.target.state_dict(), "step": result.step,
                "summary": result.summary, "main": result.main}, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("predictor", ["directpred", "mlp"])
def test_two_gloo_ranks_stay_identical(tmp_path, predictor):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), predictor), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["step"] == r1["step"] == 1437 // 128  # the global batch of 128 is split 64 + 64
    assert r0["summary"] is not None and r1["summary"] is None  # only rank 0 evaluates and writes
    assert r0["main"] and not r1["main"]  # and only rank 0 reports (deep-train's closing line)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl",
                                                                    "summary.json"]
    for part in ("online", "target"):
        for key, value in r0[part].items():
            if "running_" in key or "num_batches" in key:
                continue  # BN running statistics follow each rank's own shard (SyncBN needs CUDA)
            # gradients are all-reduced and F̂ is all-reduced before W_p is set: same bits on both ranks
            assert torch.equal(value, r1[part][key]), (part, key)
    corr = r0["online"]["predictor.tracker.value"]  # for mlp: the F̂ monitor, all-reduced as well
    assert corr.abs().sum() > 0 and torch.equal(corr, r1["online"]["predictor.tracker.value"])
