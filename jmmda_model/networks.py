"""JMMDA-GAN networks: generator, PatchGAN discriminator and the pix2pix U-Net baseline.

Generator (paper doi 10.11999/JEIT250643):
  1. mask-guided feature fusion - CT and brain-mask features fused by convolution; the mask branch
     produces a spatial gate that emphasises brain (and, through learning, lesion) regions;
  2. multi-frequency attention encoder - each down-sampling step is a 2-D DWT (PyWavelets filter
     bank, Haar by default); the low band (global content) and the three high bands (edges) are
     processed by separate convolutional paths and fused by a dual-path multi-head attention
     (low queries high, high queries low). The high bands are kept as channels, so no
     high-frequency detail is discarded by down-sampling. The decoder up-samples with the IDWT;
  3. adaptive fusion weighting - decoder features at every scale are projected to a common width,
     a CNN scores each scale per pixel and an attention over the scale descriptors scores each
     scale globally; a softmax of the combined scores weights the scales before they are fused.

Switches (for ablations): ``use_mask``, ``use_dwt``, ``use_adaptive_fusion``.
All networks take ``(B, C_ct + 1, H, W)``: the CT window channels followed by the brain mask.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .wavelets import DWT2D, IDWT2D


def _norm(ch: int) -> nn.Module:
    return nn.GroupNorm(num_groups=min(8, ch), num_channels=ch)


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), _norm(cout), nn.SiLU(inplace=True))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(ConvBlock(cin, cout), nn.Conv2d(cout, cout, 3, padding=1), _norm(cout))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class MaskGuidedFusion(nn.Module):
    """Fuses CT features with brain-mask features; the mask acts as a learned spatial prior.

    ``light``: one CT block, a narrow (C/4) mask branch and a 1x1 gate - about a fifth of the full-resolution
    work of the first design (two blocks per branch, 3x3 gate), which took ~18 % of the generator's time."""

    def __init__(self, ct_channels: int, out_channels: int, light: bool = False):
        super().__init__()
        mc = max(out_channels // 4, 4) if light else out_channels
        if light:
            self.ct = ConvBlock(ct_channels, out_channels)
            self.mask = ConvBlock(1, mc)
            self.gate = nn.Sequential(nn.Conv2d(out_channels + mc, out_channels, 1), nn.Sigmoid())
        else:
            self.ct = nn.Sequential(ConvBlock(ct_channels, out_channels), ConvBlock(out_channels, out_channels))
            self.mask = nn.Sequential(ConvBlock(1, out_channels), ConvBlock(out_channels, out_channels))
            self.gate = nn.Sequential(nn.Conv2d(2 * out_channels, out_channels, 3, padding=1), nn.Sigmoid())
        self.fuse = ConvBlock(out_channels + mc, out_channels)

    def forward(self, ct: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        f_ct = self.ct(ct)
        f_m = self.mask(mask)
        both = torch.cat([f_ct, f_m], 1)
        gated = f_ct * (1.0 + self.gate(both))  # emphasise, never erase, CT evidence
        return self.fuse(torch.cat([gated, f_m], 1)) + f_ct


class ChannelAttention(nn.Module):
    """Multi-head attention over channels (cost linear in pixels): queries from one feature map,
    keys/values from another."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.q = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.Conv2d(channels, channels, 3, padding=1, groups=channels))
        self.kv = nn.Sequential(
            nn.Conv2d(channels, 2 * channels, 1), nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels)
        )
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, query_src: torch.Tensor, kv_src: torch.Tensor) -> torch.Tensor:
        b, c, h, w = query_src.shape
        q = self.q(query_src).reshape(b, self.heads, c // self.heads, h * w)
        k, v = self.kv(kv_src).chunk(2, dim=1)
        k = k.reshape(b, self.heads, c // self.heads, h * w)
        v = v.reshape(b, self.heads, c // self.heads, h * w)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.reshape(b, c, h, w))


class DualPathAttention(nn.Module):
    """Low-frequency path attends to high-frequency features and vice versa; both are fused."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm_low = _norm(channels)
        self.norm_high = _norm(channels)
        self.low_from_high = ChannelAttention(channels, heads)
        self.high_from_low = ChannelAttention(channels, heads)
        self.fuse = ConvBlock(2 * channels, channels)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        nl, nh = self.norm_low(low), self.norm_high(high)
        low = low + self.low_from_high(nl, nh)
        high = high + self.high_from_low(nh, nl)
        return self.fuse(torch.cat([low, high], 1))


class MultiFrequencyDown(nn.Module):
    """One encoder step: DWT split -> low/high conv paths -> dual-path attention fusion."""

    def __init__(self, cin: int, cout: int, heads: int, wavelet: str, use_dwt: bool):
        super().__init__()
        self.use_dwt = use_dwt
        if use_dwt:
            self.dwt = DWT2D(wavelet)
            self.low = ConvBlock(cin, cout)
            self.high = ConvBlock(3 * cin, cout)
        else:  # ablation: learned strided-conv down-sampling, single feature stream
            self.down = ConvBlock(cin, cout, stride=2)
        self.attn = DualPathAttention(cout, heads)
        self.res = ResBlock(cout, cout)

    def forward(self, x):
        if self.use_dwt:
            low, high = self.dwt(x)
            fused = self.attn(self.low(low), self.high(high))
        else:
            y = self.down(x)
            fused = self.attn(y, y)
        return self.res(fused)


class Up(nn.Module):
    """Decoder step: predicts the four wavelet bands and inverts them (IDWT), then merges the skip."""

    def __init__(self, cin: int, cout: int, wavelet: str, use_dwt: bool):
        super().__init__()
        self.use_dwt = use_dwt
        if use_dwt:
            self.bands = nn.Conv2d(cin, 4 * cout, 3, padding=1)
            self.idwt = IDWT2D(wavelet)
        else:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), ConvBlock(cin, cout))
        self.merge = ResBlock(2 * cout, cout)
        self.cout = cout

    def forward(self, x, skip):
        if self.use_dwt:
            bands = self.bands(x)
            y = self.idwt(bands[:, : self.cout], bands[:, self.cout :])
        else:
            y = self.up(x)
        return self.merge(torch.cat([y, skip], 1))


class AdaptiveFusionWeighting(nn.Module):
    """Learns one weight per scale (per pixel, CNN path + global attention path) and fuses the scales.

    ``scale`` > 1 computes the weights (and fuses the coarse scales) at 1/scale of the finest resolution; only
    the finest scale is weighted at full resolution, with the weights up-sampled. ``scale=1`` is the full
    resolution form (all scales projected and scored per full-resolution pixel: memory-bound and ~16 % of the
    generator's time at base width 16)."""

    def __init__(self, scale_channels: list[int], width: int, heads: int, scale: int = 1):
        super().__init__()
        self.proj = nn.ModuleList([nn.Conv2d(c, width, 1) for c in scale_channels])
        self.score_cnn = nn.Sequential(ConvBlock(width, width // 2), nn.Conv2d(width // 2, 1, 3, padding=1))
        self.scale_attn = nn.MultiheadAttention(width, num_heads=heads, batch_first=True)
        self.score_attn = nn.Linear(width, 1)
        self.scale = int(scale)

    def forward(self, feats: list[torch.Tensor], return_weights: bool = False):
        full = feats[0].shape[-2:]
        size = full if self.scale == 1 else (max(1, full[0] // self.scale), max(1, full[1] // self.scale))
        finest = self.proj[0](feats[0])
        proj = [finest if size == full else F.adaptive_avg_pool2d(finest, size)]
        proj += [
            F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size else p(f)
            for p, f in zip(self.proj[1:], feats[1:])
        ]
        stack = torch.stack(proj, 1)  # (B, S, C, h, w)
        b, s, _, h, w = stack.shape
        local = self.score_cnn(stack.flatten(0, 1)).view(b, s, h, w)
        tokens = stack.mean(dim=(-2, -1))  # (B, S, C) scale descriptors
        ctx, _ = self.scale_attn(tokens, tokens, tokens)
        global_score = self.score_attn(ctx).view(b, s, 1, 1)
        weights = torch.softmax(local + global_score, dim=1)
        if size == full:
            fused = (weights.unsqueeze(2) * stack).sum(1)
        else:
            coarse = (weights[:, 1:].unsqueeze(2) * stack[:, 1:]).sum(1)
            up = F.interpolate(torch.cat([weights[:, :1], coarse], 1), size=full, mode="bilinear", align_corners=False)
            fused = up[:, :1] * finest + up[:, 1:]
            weights = F.interpolate(weights, size=full, mode="bilinear", align_corners=False)
        return (fused, weights) if return_weights else fused


class RenderHead(nn.Module):
    """Residual over the tissue prior, brightened where the lesion head sees an infarct.

    From features: residual ``r``, lesion logit ``l`` and gain ``g``;
    ``out = clamp(prior * (1 + sigmoid(l) * softplus(g)) + r, 0, 1)``. The lesion probability decides how much
    brighter than the normal-tissue prior a pixel is rendered, so a confident lesion is never rendered at or
    below normal brightness unless the residual learns to. Zero-initialised (r = 0, g = softplus(0) = 0.69,
    l = -4): an untrained model outputs the prior (x 1.01), never less than the lookup table.

    ``residual_bound`` b > 0 bounds the residual softly, ``r = b * tanh(r_raw / b)`` (the identity near 0): brightness
    far above the prior can then come only through the lesion gate, that is through the lesion probability. 0: an
    unbounded residual (models trained before the option)."""

    def __init__(self, cin: int, kernel: int = 1, residual_bound: float = 0.0):
        super().__init__()
        self.residual_bound = float(residual_bound)
        self.conv = nn.Conv2d(cin, 3, kernel, padding=kernel // 2)
        nn.init.zeros_(self.conv.weight)
        with torch.no_grad():
            self.conv.bias.copy_(torch.tensor([0.0, -4.0, 0.0]))

    def parts(self, h: torch.Tensor):
        """The residual (bounded as configured), the lesion logit and the raw gain that ``forward`` renders with;
        diagnostics that take the rendering apart call this rather than repeat it."""
        r, logit, g = self.conv(h).chunk(3, dim=1)
        if self.residual_bound > 0:
            r = self.residual_bound * torch.tanh(r / self.residual_bound)
        return r, logit, g

    def forward(self, h: torch.Tensor, prior: torch.Tensor):
        r, logit, g = self.parts(h)
        out = prior * (1.0 + torch.sigmoid(logit) * F.softplus(g)) + r
        return out.clamp(0.0, 1.0), logit


def strict_from_dict(cls, d: dict, what: str):
    """Builds dataclass ``cls`` from ``d``, refusing unknown keys (typos must not pass silently)."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} keys: {sorted(unknown)}")
    return cls(**d)


def gives_lesion_logits(cfg) -> bool:
    """``GeneratorConfig.lesion_logits`` of any object with its fields (a network's ``cfg`` may be another kind)."""
    return bool(getattr(cfg, "residual_prior", False)
                or (getattr(cfg, "aux_lesion", False) and getattr(cfg, "arch", "jmmda") == "jmmda"))


@dataclass
class GeneratorConfig:
    arch: str = "jmmda"  # "jmmda" or "pix2pix"
    ct_channels: int = 1
    base_channels: int = 32
    depth: int = 3
    heads: int = 4
    wavelet: str = "haar"
    use_mask: bool = True
    use_dwt: bool = True
    use_adaptive_fusion: bool = True
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 4, 4, 8, 8])
    #: adaptive fusion weights computed at 1/fusion_scale resolution (1 = full resolution, the first design)
    fusion_scale: int = 2
    #: auxiliary lesion-probability head (training only; inference ignores it)
    aux_lesion: bool = False
    #: light mask-guided stem (see MaskGuidedFusion)
    light_stem: bool = True
    #: the input carries the tissue prior as its last channel (after the mask); the output is a residual over it
    #: with a lesion-probability head (RenderHead). Inference returns the lesion logits with ``return_aux``.
    residual_prior: bool = False
    #: soft bound of the render head's residual in normalised DWI (normal brain's median is 0.25): brightness beyond
    #: it comes through the lesion probability (RenderHead); 0: unbounded
    residual_bound: float = 0.0

    #: values of keys added after the first release, for checkpoints written before them
    LEGACY = {"fusion_scale": 1, "aux_lesion": False, "light_stem": False, "residual_prior": False}

    def __post_init__(self):
        rb = float(self.residual_bound)
        if not (math.isfinite(rb) and 0.0 <= rb <= 1.0):
            raise ValueError(f"residual_bound {self.residual_bound}: must be within 0..1 (normalised DWI; 0: unbounded)")
        if rb > 0 and not self.residual_prior:
            raise ValueError("residual_bound needs residual_prior (the render head over the tissue prior)")

    @property
    def lesion_logits(self) -> bool:
        """Whether the generator gives lesion logits beside the synthesis (``forward(x, return_aux=True)``): the
        render head, or the JMMDA generator's auxiliary lesion head (the pix2pix U-Net has none)."""
        return gives_lesion_logits(self)

    @property
    def input_channels(self) -> int:
        """CT channels, the mask, and the prior when ``residual_prior``."""
        return self.ct_channels + 1 + (1 if self.residual_prior else 0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        return strict_from_dict(cls, {**cls.LEGACY, **d}, "generator config")


def has_lesion_head(net) -> bool:
    """Whether ``net`` gives lesion logits beside the synthesis (``net(x, return_aux=True)``): a generator with the
    render head, a JMMDA generator with the auxiliary lesion head (the pix2pix U-Net has none: its ``aux_lesion``
    gives no logits), or a TorchScript export traced with its logits."""
    cfg = getattr(net, "cfg", None)
    return gives_lesion_logits(cfg) if cfg is not None else bool(getattr(net, "has_logits", False))


class WithLogits:
    """``forward_with_logits``: the synthesis and the lesion logit as one (N, 2, H, W) tensor - the method a
    TorchScript export traces beside ``forward`` (``export.export_torchscript``), so an exported model keeps its
    infarct-probability map."""

    def forward_with_logits(self, x: torch.Tensor) -> torch.Tensor:
        out, logit = self.forward(x, return_aux=True)
        return torch.cat([out, logit], 1)


class JMMDAGenerator(WithLogits, nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        if cfg.depth < 1 or cfg.depth > len(cfg.channel_mults) - 1:
            raise ValueError(f"depth must be in 1..{len(cfg.channel_mults) - 1}")
        self.cfg = cfg
        ch = [cfg.base_channels * m for m in cfg.channel_mults[: cfg.depth + 1]]
        self.size_divisor = 2**cfg.depth
        stem_in = cfg.ct_channels + (1 if cfg.residual_prior else 0)  # the prior joins the CT branch
        if cfg.use_mask:
            self.stem = MaskGuidedFusion(stem_in, ch[0], light=cfg.light_stem)
        else:
            self.stem = nn.Sequential(ConvBlock(stem_in, ch[0]), ConvBlock(ch[0], ch[0]))
        self.down = nn.ModuleList(
            [MultiFrequencyDown(ch[i], ch[i + 1], cfg.heads, cfg.wavelet, cfg.use_dwt) for i in range(cfg.depth)]
        )
        self.bottleneck = ResBlock(ch[-1], ch[-1])
        self.up = nn.ModuleList([Up(ch[i + 1], ch[i], cfg.wavelet, cfg.use_dwt) for i in reversed(range(cfg.depth))])
        if cfg.use_adaptive_fusion:
            # decoder outputs, coarse to fine: ch[depth-1], ..., ch[0]; fuse at full resolution (finest first)
            self.fusion = AdaptiveFusionWeighting(list(ch[: cfg.depth]), ch[0], cfg.heads, cfg.fusion_scale)
        if cfg.residual_prior:
            self.head = nn.Sequential(ConvBlock(ch[0], ch[0]))
            self.render = RenderHead(ch[0], residual_bound=cfg.residual_bound)
            self.lesion_head = None
        else:
            self.head = nn.Sequential(ConvBlock(ch[0], ch[0]), nn.Conv2d(ch[0], 1, 1))
            self.lesion_head = nn.Conv2d(ch[0], 1, 1) if cfg.aux_lesion else None

    def forward(self, x: torch.Tensor, return_weights: bool = False, return_aux: bool = False):
        c = self.cfg.ct_channels
        ct, mask = x[:, :c], x[:, c : c + 1]
        prior = x[:, c + 1 : c + 2] if self.cfg.residual_prior else None
        if prior is not None:
            ct = torch.cat([ct, prior], 1)
        h = self.stem(ct, mask) if self.cfg.use_mask else self.stem(ct)
        skips = [h]
        for down in self.down:
            h = down(h)
            skips.append(h)
        h = self.bottleneck(skips.pop())
        dec = []
        for up in self.up:
            h = up(h, skips.pop())
            dec.append(h)
        weights = None
        if self.cfg.use_adaptive_fusion:
            h, weights = self.fusion(dec[::-1], return_weights=True)
        if prior is not None:
            out, logit = self.render(self.head(h), prior)
            if return_aux:
                return out, logit
            return (out, weights) if return_weights else out
        out = torch.sigmoid(self.head(h))
        if return_aux:
            return out, (self.lesion_head(h) if self.lesion_head is not None else None)
        return (out, weights) if return_weights else out


class UNetGenerator(WithLogits, nn.Module):
    """pix2pix U-Net generator baseline (Isola et al. 2017), strided-conv encoder, transposed-conv decoder."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.size_divisor = 2**cfg.depth
        cin = cfg.ct_channels + (1 if cfg.use_mask else 0) + (1 if cfg.residual_prior else 0)
        ch = [cfg.base_channels * m for m in cfg.channel_mults[: cfg.depth + 1]]
        self.inc = nn.Sequential(nn.Conv2d(cin, ch[0], 3, padding=1), nn.LeakyReLU(0.2, True))
        self.downs = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1), nn.InstanceNorm2d(ch[i + 1], affine=True), nn.LeakyReLU(0.2, True))
                for i in range(cfg.depth)
            ]
        )
        self.ups = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(ch[i + 1] * (1 if i == cfg.depth - 1 else 2), ch[i], 4, 2, 1),
                    nn.InstanceNorm2d(ch[i], affine=True),
                    nn.ReLU(True),
                )
                for i in reversed(range(cfg.depth))
            ]
        )
        self.out = RenderHead(2 * ch[0], 3, cfg.residual_bound) if cfg.residual_prior else nn.Conv2d(2 * ch[0], 1, 3, padding=1)

    def forward(self, x: torch.Tensor, return_weights: bool = False, return_aux: bool = False):
        c = self.cfg.ct_channels
        prior = x[:, c + 1 : c + 2] if self.cfg.residual_prior else None
        parts = [x[:, :c]] + ([x[:, c : c + 1]] if self.cfg.use_mask else []) + ([prior] if prior is not None else [])
        x = torch.cat(parts, 1)
        feats = [self.inc(x)]
        for d in self.downs:
            feats.append(d(feats[-1]))
        h = feats[-1]
        for k, up in enumerate(self.ups):
            if k:
                h = torch.cat([h, feats[self.cfg.depth - k]], 1)
            h = up(h)
        h = torch.cat([h, feats[0]], 1)
        if prior is not None:
            out, logit = self.out(h, prior)
            return (out, logit if return_aux else None) if (return_weights or return_aux) else out
        out = torch.sigmoid(self.out(h))
        return (out, None) if (return_weights or return_aux) else out


class PatchDiscriminator(nn.Module):
    """70x70-style PatchGAN conditioned on the input (CT channels + mask) and the DWI."""

    def __init__(self, in_channels: int, base_channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = base_channels
        for i in range(1, n_layers + 1):
            nxt = base_channels * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(ch, nxt, 4, stride, 1), nn.InstanceNorm2d(nxt, affine=True), nn.LeakyReLU(0.2, True)]
            ch = nxt
        layers += [nn.Conv2d(ch, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, image], 1))


def build_generator(cfg: GeneratorConfig | dict) -> nn.Module:
    if isinstance(cfg, dict):
        cfg = GeneratorConfig.from_dict(cfg)
    if cfg.arch == "jmmda":
        return JMMDAGenerator(cfg)
    if cfg.arch == "pix2pix":
        return UNetGenerator(cfg)
    raise ValueError(f"unknown generator arch {cfg.arch!r} (expected 'jmmda' or 'pix2pix')")
