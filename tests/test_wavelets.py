import numpy as np
import pytest
import pywt
import torch

from jmmda_model.wavelets import DWT2D, IDWT2D

WAVELETS = ["haar", "db2", "db4", "sym4", "coif1", "bior2.2", "bior4.4", "rbio3.3"]


@pytest.mark.parametrize("name", WAVELETS)
@pytest.mark.parametrize("shape", [(16, 16), (16, 12), (32, 20)])
def test_dwt_matches_pywavelets(name, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3) + shape)
    low, high = DWT2D(name).double()(torch.tensor(x))
    cA, (cH, cV, cD) = pywt.dwt2(x, name, mode="periodization")
    h = high.view(2, 3, 3, shape[0] // 2, shape[1] // 2).numpy()
    np.testing.assert_allclose(low.numpy(), cA, atol=1e-10)
    for i, ref in enumerate((cH, cV, cD)):
        np.testing.assert_allclose(h[:, :, i], ref, atol=1e-10)


@pytest.mark.parametrize("name", WAVELETS)
def test_idwt_matches_pywavelets_and_reconstructs(name):
    rng = np.random.default_rng(1)
    coeffs = [rng.standard_normal((1, 2, 8, 6)) for _ in range(4)]
    ref = pywt.idwt2((coeffs[0], tuple(coeffs[1:])), name, mode="periodization")
    high = np.stack(coeffs[1:], 2).reshape(1, 6, 8, 6)
    out = IDWT2D(name).double()(torch.tensor(coeffs[0]), torch.tensor(high)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-10)
    x = torch.tensor(rng.standard_normal((1, 2, 16, 12)))
    np.testing.assert_allclose(IDWT2D(name).double()(*DWT2D(name).double()(x)).numpy(), x.numpy(), atol=1e-10)


def test_haar_is_default_and_energy_preserving():
    x = torch.randn(1, 4, 32, 32)
    low, high = DWT2D()(x)
    assert DWT2D().wavelet == "haar"
    assert torch.allclose((low**2).sum() + (high**2).sum(), (x**2).sum(), rtol=1e-4)
    # high bands of a constant image are zero: the low band carries the global content
    lo_c, hi_c = DWT2D()(torch.ones(1, 1, 8, 8))
    assert hi_c.abs().max() < 1e-6 and torch.allclose(lo_c, torch.full_like(lo_c, 2.0))


def test_gradients_flow_and_float32_precision():
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    low, high = DWT2D("db2")(x)
    (low.sum() + high.pow(2).sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    y = IDWT2D("db2")(*DWT2D("db2")(x.detach()))
    assert torch.allclose(y, x.detach(), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="unknown wavelet"):
        DWT2D("nope")
    with pytest.raises(ValueError, match="even"):
        DWT2D()(torch.zeros(1, 1, 7, 8))
