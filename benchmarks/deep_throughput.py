"""Deep-training throughput (images/s) and how one step splits into data, augmentation and network.

The trainer's step on CIFAR-10-sized input (uint8 3×32×32 images held in memory — on the GPU when it
is used, as the trainer does): index a batch (data), two views with ``BatchAugment`` and the CIFAR-10
preset (augmentation), and ``linssl.deep.step.TrainingStep`` — online + target forward, symmetric loss,
backward, SGD step, EMA update (network). bf16 autocast, channels_last and ``torch.compile`` are used
only on CUDA (``--no-amp``, ``--no-channels-last``, ``--no-compile`` turn them off there).

Throughput is timed over whole steps without extra synchronisation; the split is timed in a second
pass that synchronises the device after each phase (so it adds up to a little more than a step).
The images are random (the content does not change the cost).

    .venv/bin/python benchmarks/deep_throughput.py --device cuda       # ResNet-18, batch 512
    .venv/bin/python benchmarks/deep_throughput.py --device cpu --batch 32 --steps 3
    .venv/bin/python benchmarks/deep_throughput.py --quick              # small net, CPU, seconds

Last line: {"images_per_s": …, "data_share": …, "augment_share": …, "network_share": …, "device": …}.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import emit, machine, median, print_table

from linssl.deep import augment as augment_mod
from linssl.deep.config import DeepConfig, augment_config, build_online, build_optimizer
from linssl.deep.models import make_target
from linssl.deep.ranks import select_device
from linssl.deep.step import TrainingStep


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small conv net, batch 16, CPU, 2 timed steps")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--predictor", default="directcopy")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (per pass)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation happens here)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-amp", action="store_true", help="CUDA: no bf16 autocast")
    parser.add_argument("--no-channels-last", action="store_true", help="CUDA: keep NCHW")
    parser.add_argument("--no-compile", action="store_true", help="CUDA: no torch.compile")
    args = parser.parse_args(argv)
    if args.quick:
        args.device, args.arch, args.batch, args.steps, args.warmup = "cpu", "small", 16, 2, 1
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    cuda = device.type == "cuda"
    amp, channels_last = cuda and not args.no_amp, cuda and not args.no_channels_last
    compiled = cuda and not args.no_compile
    cfg = DeepConfig(dataset="cifar10", out="unused", arch=args.arch, width=8, predictor=args.predictor,
                     batch_size=args.batch, amp=amp, compile=compiled, device=device.type).resolve()
    online = build_online(cfg, 3).to(device)
    target = make_target(online)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        online.to(memory_format=torch.channels_last)
        target.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(online, cfg)
    if compiled:
        online.backbone.compile()
        target[0].compile()
    augment = augment_mod.BatchAugment(augment_config(cfg)).to(device)
    aug_gen = torch.Generator().manual_seed(1)
    n_batches = 8
    images = torch.randint(0, 256, (n_batches * args.batch, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(device)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(2)).to(device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def data(k: int) -> torch.Tensor:
        return images[order[(k % n_batches) * args.batch:(k % n_batches + 1) * args.batch]]

    def views(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1 = augment(batch, generator=aug_gen).contiguous(memory_format=layout)
        x2 = augment(batch, generator=aug_gen).contiguous(memory_format=layout)
        return x1, x2

    training_step = TrainingStep(online, target, optimizer, amp=amp)

    def network(x1: torch.Tensor, x2: torch.Tensor) -> None:
        training_step(x1, x2, cfg.ema_momentum)

    online.train()
    target.train()
    for k in range(args.warmup):
        network(*views(data(k)))
    sync()
    t0 = time.perf_counter()
    for k in range(args.steps):
        network(*views(data(k)))
    sync()
    step_s = (time.perf_counter() - t0) / args.steps

    phases: dict[str, list[float]] = {"data": [], "augment": [], "network": []}
    for k in range(args.steps):
        t0 = time.perf_counter()
        batch = data(k)
        sync()
        t1 = time.perf_counter()
        x1, x2 = views(batch)
        sync()
        t2 = time.perf_counter()
        network(x1, x2)
        sync()
        t3 = time.perf_counter()
        for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            phases[name].append(seconds)
    split = {name: median(v) for name, v in phases.items()}
    total = sum(split.values())
    card = torch.cuda.get_device_name(device) if cuda else f"cpu ({args.threads} threads)"
    print("machine:", machine())
    print(f"device {card}, arch {cfg.arch}, predictor {cfg.predictor}, batch {args.batch}, 32 px, bf16 {amp}, "
          f"channels_last {channels_last}, compile {compiled}, {args.warmup} warm-up + {args.steps} timed steps")
    print_table(["phase", "median ms/step", "share"],
                [[name, 1e3 * s, s / total] for name, s in split.items()] + [["step (unsynced)", 1e3 * step_s, ""]])
    print(f"throughput: {args.batch / step_s:.1f} images/s")
    headline = {"images_per_s": round(args.batch / step_s, 2), **{f"{k}_share": round(v / total, 4)
                                                                   for k, v in split.items()}, "device": card}
    emit(headline)
    return headline


if __name__ == "__main__":
    main()
