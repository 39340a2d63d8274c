"""The public Python API: every command of the ``linssl`` CLI as a function with keyword arguments.

Import it as ``import linssl``; the names below are exposed there (``linssl.simulate``,
``linssl.sweep``, ``linssl.check``, ``linssl.sample_complexity``), beside ``linssl.theory`` (the
closed forms) and ``linssl.deep`` (``linssl.deep.train``). A CLI flag ``--some-flag`` is the keyword
argument ``some_flag``; the functions return the result objects the CLI prints. Errors in the
arguments raise ``linssl.errors.LinsslError`` with the same one-line message the CLI prints.
The theory behind every result is ``docs/theory.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imports stay lazy: ``import linssl`` does not load torch
    from linssl.linear.downstream import SampleComplexityResult
    from linssl.linear.simulation import SimulationResult
    from linssl.linear.sweep import SweepResult
    from theory_checks import CheckResult


def _floats(values: float | Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in np.atleast_1d(np.asarray(values, dtype=float)))


def _matrix(values: Any) -> tuple[tuple[float, ...], ...] | None:
    if values is None:
        return None
    return tuple(tuple(float(v) for v in row) for row in np.atleast_2d(np.asarray(values, dtype=float)))


def simulate(*, dim: int | None = None, progress: bool = False, **options: Any) -> SimulationResult:
    """Simulate one linear siamese network and compare it with the closed forms (``linssl simulate``).

    Args:
        dim: input dimension d when ``aug_var`` is not given (that many augmentation variances spread
            geometrically over 0.1 … 10; default 8).
        progress: show a progress bar on stderr (terminals only).
        **options: the fields of ``linssl.linear.simulation.SimConfig``, i.e. the CLI's flags: ``wd`` (η),
            ``aug_var`` (σ² per feature; a sequence), ``data_var`` (λ; one value or a sequence), ``out_dim``,
            ``predictor`` (directpred, directcopy, directset, trainable), ``alpha``, ``f_source``, ``norm``,
            ``eps``, ``target``, ``ema`` (rate β), ``target_scale`` (τ), ``pred_lr``, ``pred_wd``, ``mode``
            (flow, gd, sgd), ``time``, ``steps``, ``lr``, ``batch``, ``rho``, ``freq``, ``init_scale``,
            ``init``, ``seed``, ``rotate``, ``conv_tol``, ``rtol``, ``atol``, ``data_cov`` / ``aug_cov`` (d×d
            arrays: a general, non-commuting model).

    Returns:
        ``SimulationResult``: ``features`` (per feature λ, σ², kept predicted / simulated, squared gain
        predicted / simulated), ``threshold_aug_var``, ``alignment_offdiag``, ``projection_error``,
        ``converged``, ``max_gain_rel_error``, ``passed``, ``verdict``, the ``record`` of the trajectory
        (times, gains, spectra of F and W_p, alignment, loss) and ``to_json()``. The closed forms are
        docs/theory.md §4: kept iff λ² ≥ 4η(λ + σ²), squared gain p₊^{1/α}/(λ + σ²).

    Example:
        >>> r = linssl.simulate(wd=0.05, aug_var=[0.1, 6.0])
        >>> [f.kept_simulated for f in r.features]
        [True, False]
    """
    from linssl.linear.simulation import SimConfig, run_simulation
    from linssl.simulate import default_aug_var

    for name in ("aug_var", "data_var"):
        if name in options:
            options[name] = _floats(options[name])
    for name in ("data_cov", "aug_cov"):
        if name in options:
            options[name] = _matrix(options[name])
    if "aug_var" not in options and options.get("data_cov") is None:
        options["aug_var"] = default_aug_var(8 if dim is None else int(dim))
    elif dim is not None and len(options.get("aug_var") or options.get("data_cov") or ()) != dim:
        raise TypeError(f"dim = {dim} disagrees with the length of aug_var / data_cov")
    return run_simulation(SimConfig(**options), progress=progress)


def sweep(
    wds: float | Sequence[float],
    *,
    aug_var: float | Sequence[float] = (0.1, 0.25, 0.5, 1.0, 2.5, 6.0, 8.0, 10.0),
    data_var: float | Sequence[float] = 1.0,
    predictor: str = "directpred",
    alpha: float | None = None,
    f_source: str = "aug",
    norm: str = "none",
    eps: float = 0.0,
    seed: int = 0,
    rotate: bool = True,
    **flow_options: Any,
) -> SweepResult:
    """Integrate the gradient flow for many weight decays at once, as one batch.

    Args:
        wds: the weight decays η, one run each.
        aug_var, data_var: the commuting model's σ² and λ per feature (data_var: one value or one per
            feature); the model basis is a random rotation from ``seed`` (``rotate=False``: the identity).
        predictor, alpha, f_source, norm, eps: the predictor rule (``linssl.predictors.make_rule``).
        **flow_options: ``linssl.linear.sweep.sweep_flow``'s keywords: ``target``, ``init_scale``,
            ``t_max``, ``conv_tol``, ``rtol``, ``atol``, ``n_records``, ``integrator`` (auto, exponential,
            batched, solve_ivp), ``method``.

    Returns:
        ``SweepResult``: ``wd`` (B,), ``data_var`` and ``aug_var`` (B, d), the simulated squared gains
        ``gain_sq`` (B, d) beside the closed form ``gain_sq_predicted`` (docs/theory.md §4), ``kept`` and
        ``kept_predicted`` masks, and the ``trajectory``.
    """
    from linssl.linear.data import commuting_model
    from linssl.linear.sweep import sweep_flow
    from linssl.predictors import make_rule

    model = commuting_model(_floats(data_var), _floats(aug_var), seed, rotate)  # one λ serves every feature
    rule = make_rule(predictor, alpha=alpha, norm=norm, eps=eps, f_source=f_source)
    return sweep_flow(model, list(_floats(wds)), rule, seed=seed, **flow_options)


def check(only: str | Iterable[str] | None = None, *, quick: bool = False) -> list[CheckResult]:
    """Run the theory checks (``linssl check``): each runs the simulator on a grid chosen without
    looking at the prediction and compares it with the closed form under a stated tolerance.

    Args:
        only: check names (an iterable, or a comma-separated string as on the CLI); default all, in
            the order of ``theory_checks.CHECKS``.
        quick: smaller runs of every check (about 10 s in total).

    Returns:
        one ``theory_checks.CheckResult`` per check: ``name``, ``claim``, ``predicted``, ``measured``,
        ``error``, ``tolerance``, ``passed``, ``failures``, ``details``, ``seconds``, ``to_json()``.
    """
    from theory_checks import run_checks
    from theory_checks.cli import selected_names

    names = selected_names(only) if isinstance(only, str) else (None if only is None else list(only))
    return run_checks(names, quick=quick)


def sample_complexity(**options: Any) -> SampleComplexityResult:
    """Downstream sample complexity on the raw input against the learned representation
    (``linssl sample-complexity``; docs/theory.md §5).

    Args:
        **options: the fields of ``linssl.linear.downstream.SampleComplexityConfig``: ``dim``, ``rank``,
            ``noise`` (σ_ν), ``n_grid`` (training sizes), ``seeds``, ``wd``, ``outside``, ``target_risk``,
            ``representation`` (simulated, ideal), ``ridge``, ``classification``, ``seed``,
            ``sim_t_max``, ``sim_conv_tol``.

    Returns:
        ``SampleComplexityResult``: per representation and estimator a ``Curve`` of measured excess risk
        against n (mean, 95 % CI, spread) beside the closed form σ_ν² p/(n − p − 1), the n each needs to
        reach the target risk, and their ratio.
    """
    from linssl.linear.downstream import SampleComplexityConfig, sample_complexity_curves

    if options.get("n_grid") is not None:
        options["n_grid"] = tuple(int(n) for n in options["n_grid"])
    return sample_complexity_curves(SampleComplexityConfig(**options))
