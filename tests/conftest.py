"""Test-session settings: torch on one thread (the suite's matrices are small; threads only contend)."""

import torch

torch.set_num_threads(1)
