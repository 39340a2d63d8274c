"""Predictor rules: values against their definitions, invariants, and the no-eigh promise of DirectCopy."""

import pytest
import torch

from linssl.errors import LinsslError
from linssl.predictors import (
    CorrelationEMA,
    direct_copy,
    direct_pred,
    direct_set,
    make_rule,
    normalise,
    spectral_norm_power,
)


def random_psd(m: int, batch: tuple[int, ...] = (), seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, m, m, generator=gen, dtype=dtype)
    return A @ A.mT / m


def test_directset_half_squares_back_to_F():
    F = random_psd(6)
    Wp = direct_set(F, 0.5)
    # float64 eigh: relative accuracy ~1e-14; 1e-10 leaves room for the conditioning of F.
    torch.testing.assert_close(Wp @ Wp, F, rtol=0, atol=1e-10)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0, 1.5, 2.0])
def test_directset_is_symmetric_psd_and_commutes_with_F(alpha):
    F = random_psd(5, seed=1)
    Wp = direct_set(F, alpha, eps=0.1)
    torch.testing.assert_close(Wp, Wp.mT, rtol=0, atol=1e-12)
    assert torch.linalg.eigvalsh(Wp).min() >= 0.1 - 1e-10  # ε shifts every eigenvalue up by ε
    torch.testing.assert_close(Wp @ F, F @ Wp, rtol=0, atol=1e-10)


def test_directpred_spectral_matches_paper_formula():
    F = random_psd(7, seed=2)
    s, U = torch.linalg.eigh(F)
    expected = U @ torch.diag((s.clamp_min(0) / s.max()).sqrt() + 0.01) @ U.T
    torch.testing.assert_close(direct_pred(F, "spectral", 0.01), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", ["none", "spectral", "frobenius"])
def test_directcopy_is_normalised_F_plus_eps(norm):
    F = random_psd(8, seed=3)
    scale = {"none": 1.0, "spectral": torch.linalg.eigvalsh(F).max(), "frobenius": torch.linalg.matrix_norm(F)}[norm]
    # 60 power steps: the spectral estimate converges like (s2/s1)^(2k); 1e-8 is far above that error.
    got = direct_copy(F, norm, eps=0.25, power_iters=60)
    torch.testing.assert_close(got, F / scale + 0.25 * torch.eye(8, dtype=F.dtype), rtol=0, atol=1e-8)


def test_directcopy_never_decomposes(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("DirectCopy must not call eigh/svd/eig")

    for name in ("eigh", "eigvalsh", "svd", "svdvals", "eig", "eigvals"):
        monkeypatch.setattr(torch.linalg, name, forbidden)
    F = random_psd(16, seed=4)
    for norm in ("none", "spectral", "frobenius"):
        direct_copy(F, norm, 0.01)
        make_rule("directcopy", norm=norm)(F)


def test_spectral_norm_power_batched_and_warm_start():
    F = random_psd(10, batch=(4,), seed=5)
    top = torch.linalg.eigvalsh(F)[..., -1]
    # the Rayleigh quotient error decays like (s2/s1)^(2k); with these spectra 200 steps leave ~1e-8
    torch.testing.assert_close(spectral_norm_power(F, 200), top, rtol=1e-6, atol=0)
    warm = spectral_norm_power(F, 1, v0=torch.linalg.eigh(F).eigenvectors[..., -1])
    torch.testing.assert_close(warm, top, rtol=1e-12, atol=0)  # a start on the top eigenvector is exact
    assert (spectral_norm_power(F, 3) <= top + 1e-12).all()  # a Rayleigh quotient never exceeds λ_max


def test_batched_matches_unbatched_and_float32_works():
    F = random_psd(6, batch=(3,), seed=6)
    batched = direct_set(F, 0.5, "spectral", 0.01)
    for k in range(3):
        torch.testing.assert_close(batched[k], direct_set(F[k], 0.5, "spectral", 0.01))
    out32 = direct_copy(F.float(), "spectral", 0.01)
    assert out32.dtype == torch.float32 and out32.shape == (3, 6, 6)


def test_normalise_rejects_unknown():
    with pytest.raises(LinsslError):
        normalise(random_psd(3), "l1")


def test_correlation_ema_initialises_then_averages():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 4, generator=gen), torch.randn(32, 4, generator=gen)
    est = CorrelationEMA(rho=0.3)
    first = est.update(a)
    torch.testing.assert_close(first, a.T @ a / 32)
    torch.testing.assert_close(est.update(b), 0.3 * (a.T @ a / 32) + 0.7 * (b.T @ b / 32))
    torch.testing.assert_close(first, a.T @ a / 32, rtol=0, atol=0)  # a returned F̂ is never updated in place
    state = est.state_dict()
    other = CorrelationEMA(0.9)
    other.load_state_dict(state)
    assert other.rho == 0.3 and torch.equal(other.value, est.value)
    with pytest.raises(LinsslError):
        CorrelationEMA(1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "foo"},
        {"name": "directset"},
        {"name": "directset", "alpha": 0.0},
        {"name": "directset", "alpha": -1.0},
        {"name": "directpred", "alpha": 0.3},
        {"name": "directcopy", "norm": "l2"},
        {"name": "directcopy", "eps": -0.1},
        {"name": "directcopy", "f_source": "noisy"},
    ],
)
def test_make_rule_rejects_bad_input(kwargs):
    with pytest.raises(LinsslError):
        make_rule(**kwargs)


def test_make_rule_alphas():
    assert make_rule("directpred").alpha == 0.5 and make_rule("directpred").uses_eigh
    assert make_rule("directcopy").alpha == 1.0 and not make_rule("directcopy").uses_eigh
    assert make_rule("directset", alpha=2.0).alpha == 2.0
    with pytest.raises(LinsslError):
        make_rule("trainable")(random_psd(3))


def test_power_iteration_start_is_not_orthogonal_to_the_top_eigenvector():
    # the all-ones vector is an eigenvector of eigenvalue 1 here; λ_max = 2
    F = torch.tensor([[1.5, -0.5], [-0.5, 1.5]], dtype=torch.float64)
    assert spectral_norm_power(F, 60).item() == pytest.approx(2.0, rel=1e-10)


@pytest.mark.parametrize("dtype, tiny_scale", [(torch.float64, 1e-200), (torch.float32, 1e-25)])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("norm", ["spectral", "frobenius"])
def test_normalised_rules_are_scale_free_down_to_underflow(norm, alpha, dtype, tiny_scale):
    """g(cF) = g(F): a collapsing F (entries far below sqrt(tiny), where a plain sum of squares underflows
    to 0) must give the same normalised predictor, not one of size 1/tiny."""
    A = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    F = (A @ A.T).to(dtype)
    big = direct_set(F, alpha, norm)
    small = direct_set(F * tiny_scale, alpha, norm)
    # the same computation on a rescaled input: equal to a few ulps of the dtype (float32: 1e-5)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(small, big, rtol=tol, atol=tol)
