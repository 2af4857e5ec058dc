import pytest
import torch

from jmmda_model.networks import (
    AdaptiveFusionWeighting,
    GeneratorConfig,
    JMMDAGenerator,
    PatchDiscriminator,
    UNetGenerator,
    build_generator,
)
from jmmda_model.wavelets import DWT2D, IDWT2D


def _x(b=2, h=32, w=48, ct=1):
    torch.manual_seed(0)
    x = torch.rand(b, ct + 1, h, w)
    x[:, -1] = (x[:, -1] > 0.3).float()
    return x


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"use_mask": False},
        {"use_dwt": False},
        {"use_adaptive_fusion": False},
        {"wavelet": "db2"},
        {"heads": 1},
        {"arch": "pix2pix"},
        {"ct_channels": 2},
    ],
)
def test_generator_shapes_and_range(kw):
    cfg = GeneratorConfig(base_channels=8, depth=2, **{"heads": 2, **kw})
    g = build_generator(cfg)
    x = _x(ct=cfg.ct_channels)
    y = g(x)
    assert y.shape == (2, 1, 32, 48)
    assert float(y.detach().min()) >= 0 and float(y.detach().max()) <= 1
    y.mean().backward()
    assert all(p.grad is not None for p in g.parameters() if p.requires_grad)


def test_default_config_matches_paper():
    cfg = GeneratorConfig()
    assert cfg.wavelet == "haar" and cfg.heads == 4 and cfg.use_mask and cfg.use_dwt and cfg.use_adaptive_fusion


def test_ablation_switches_change_architecture():
    full = JMMDAGenerator(GeneratorConfig(base_channels=8, depth=2, heads=2))
    no_dwt = JMMDAGenerator(GeneratorConfig(base_channels=8, depth=2, heads=2, use_dwt=False))
    no_fuse = JMMDAGenerator(GeneratorConfig(base_channels=8, depth=2, heads=2, use_adaptive_fusion=False))
    kinds = lambda m: {type(x) for x in m.modules()}  # noqa: E731
    assert DWT2D in kinds(full) and IDWT2D in kinds(full)
    assert DWT2D not in kinds(no_dwt) and IDWT2D not in kinds(no_dwt)
    assert AdaptiveFusionWeighting in kinds(full) and AdaptiveFusionWeighting not in kinds(no_fuse)


def test_mask_guides_output_only_when_enabled():
    x = _x()
    x2 = x.clone()
    x2[:, -1] = 1 - x2[:, -1]
    with_mask = JMMDAGenerator(GeneratorConfig(base_channels=8, depth=2, heads=2)).eval()
    no_mask = JMMDAGenerator(GeneratorConfig(base_channels=8, depth=2, heads=2, use_mask=False)).eval()
    with torch.no_grad():
        assert (with_mask(x) - with_mask(x2)).abs().max() > 1e-4
        assert torch.equal(no_mask(x), no_mask(x2))


def test_adaptive_fusion_weights_are_a_distribution_over_scales():
    g = JMMDAGenerator(GeneratorConfig(base_channels=8, depth=3, heads=2)).eval()
    with torch.no_grad():
        _, w = g(_x(), return_weights=True)
    assert w.shape == (2, 3, 32, 48)
    assert torch.allclose(w.sum(1), torch.ones(2, 32, 48), atol=1e-5)
    assert float(w.min()) >= 0


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="divisible"):
        JMMDAGenerator(GeneratorConfig(base_channels=6, depth=1, heads=4))


def test_discriminator_is_patchgan_and_conditioned():
    d = PatchDiscriminator(in_channels=3, base_channels=16)
    x = _x(h=64, w=64)
    out = d(x, torch.rand(2, 1, 64, 64))
    assert out.shape[0] == 2 and out.shape[1] == 1 and out.shape[2] > 1 and out.shape[3] > 1
    with pytest.raises(RuntimeError):
        d(x[:, :1], torch.rand(2, 1, 64, 64))  # must see the condition


def test_config_roundtrip_and_errors():
    cfg = GeneratorConfig(base_channels=8, wavelet="sym4")
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown generator config"):
        GeneratorConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="arch"):
        build_generator({"arch": "vnet"})
    assert isinstance(build_generator({"arch": "pix2pix", "depth": 3, "base_channels": 8}), UNetGenerator)
