"""Deployable model files: a JMMDA-GAN checkpoint -> TorchScript (``.ts``).

The TorchScript file holds the traced generator (no Python model code needed to run it) and, as the extra file
``jmmda.json``, what inference needs besides the weights: preprocessing, generator configuration, size divisor,
model card and the SHA-256 of the source checkpoint. ``Synthesizer`` (``jmmda infer --model x.ts``, the server
with ``--conf model_format torchscript``) loads either kind of file.

The generator is traced on CPU in eval mode; every shape test in its forward pass depends only on the input
being a multiple of the size divisor (which inference guarantees by padding), so one trace serves any slice size.
A generator with a lesion head is traced twice over: ``forward`` (the synthesis) and ``forward_with_logits`` (the
synthesis and the lesion logit, ``networks.WithLogits``), so the export gives the infarct-probability map too;
its metadata lists ``outputs`` ["dwi", "lesion_logit"]. Exports written before that (``outputs`` absent) load as
before, without a probability map. The export is refused unless the traced module reproduces the eager generator
(both methods) on two other slice sizes.
ONNX is not produced: inference here runs in PyTorch (CPU or CUDA), not in ONNX Runtime.
Note: PyTorch 2.13 marks TorchScript deprecated in favour of ``torch.export``; TorchScript is kept because the
MONAI Bundle / MONAI Deploy tooling consumes it.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import torch

from . import checkpoint as ckpt_io
from .networks import GeneratorConfig, build_generator, has_lesion_head

META_NAME = "jmmda.json"
TORCHSCRIPT_FORMAT = "jmmda-gan-torchscript"
#: |traced - eager| allowed at export (the synthesis is in [0, 1]; lesion logits are compared relative to their
#: largest magnitude, at least 1)
AGREEMENT_TOL = 1e-5
#: what an export's traced methods give (``outputs`` of its metadata)
OUTPUTS_WITH_LOGITS = ["dwi", "lesion_logit"]
#: revision of what export_torchscript writes (2: lesion logits traced); part of the server's cache key
EXPORT_REVISION = 2


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_torchscript(path: str | Path) -> bool:
    """True for a TorchScript archive written by ``export_torchscript`` (it carries extra/jmmda.json)."""
    return any(n.endswith(f"/extra/{META_NAME}") for n in ckpt_io.zip_members(path))


def load_generator(checkpoint: str | Path):
    """(eval-mode generator on CPU, checkpoint dict) from a JMMDA-GAN checkpoint."""
    ck = ckpt_io.load(checkpoint)
    net = build_generator(ck["generator_config"])
    try:
        net.load_state_dict(ck["generator"])
    except RuntimeError as exc:
        raise ckpt_io.CheckpointError(f"{Path(checkpoint).name}: weights do not match the stored architecture: {exc}") from exc
    return net.eval(), ck


def _example(net, channels: int, hw: tuple[int, int], seed: int) -> torch.Tensor:
    d = net.size_divisor
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, channels, -(-hw[0] // d) * d, -(-hw[1] // d) * d, generator=g)


def _disagreement(a, b, x, logits: bool) -> float:
    """Largest |a - b| over ``forward`` (the synthesis) and, with ``logits``, ``forward_with_logits`` (the logit
    channel relative to its largest magnitude, at least 1)."""
    worst = float((a(x) - b(x)).abs().max())
    if logits:
        za, zb = a.forward_with_logits(x), b.forward_with_logits(x)
        worst = max(worst, float((za[:, :1] - zb[:, :1]).abs().max()),
                    float((za[:, 1:] - zb[:, 1:]).abs().max()) / max(1.0, float(zb[:, 1:].abs().max())))
    return worst


def export_torchscript(checkpoint: str | Path, out: str | Path) -> dict:
    """Traces the generator of ``checkpoint`` into ``out`` (atomic write); returns the stored metadata with the
    measured agreement. Raises ``CheckpointError`` if the traced module disagrees with the eager one."""
    checkpoint, out = Path(checkpoint), Path(out)
    net, ck = load_generator(checkpoint)
    channels = GeneratorConfig.from_dict(ck["generator_config"]).input_channels
    logits = has_lesion_head(net)  # traced with its lesion logits too
    meta = {
        "format": TORCHSCRIPT_FORMAT,
        "generator_config": ck["generator_config"],
        "preprocess": ck["preprocess"],
        "size_divisor": int(net.size_divisor),
        "input_channels": channels,
        "model_card": ck.get("model_card", {}),
        "lesion_calibration": ck.get("lesion_calibration", {}),
        "source_checkpoint": checkpoint.name,
        "source_sha256": sha256(checkpoint),
        "output": "SYNTHETIC DWI - not for diagnosis",
        "outputs": OUTPUTS_WITH_LOGITS if logits else ["dwi"],
        "torch_version": torch.__version__,
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that are constant for padded input
        x0 = _example(net, channels, (128, 128), 0)
        methods = {"forward": x0, **({"forward_with_logits": x0} if logits else {})}
        traced = torch.jit.trace_module(net, methods, check_trace=False)
        worst = 0.0
        for i, hw in enumerate([(96, 160), (208, 176)]):  # sizes other than the traced one
            worst = max(worst, _disagreement(traced, net, _example(net, channels, hw, i + 1), logits))
    if worst > AGREEMENT_TOL:
        raise ckpt_io.CheckpointError(f"TorchScript export of {checkpoint.name} disagrees with the model (max |diff| {worst:.3g})")
    meta["agreement_max_abs_diff"] = worst
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={META_NAME: json.dumps(meta, default=str)})
    ckpt_io.atomic_write_bytes(buf.getbuffer(), out, mode=0o644)
    return meta


class ExportedGenerator(torch.nn.Module):
    """A loaded TorchScript generator with the ``size_divisor`` inference pads to; ``has_logits`` when it was traced
    with its lesion logits (``forward(x, return_aux=True)`` then gives them, as the Python generator does)."""

    def __init__(self, module, size_divisor: int, has_logits: bool = False):
        super().__init__()
        self.module = module
        self.size_divisor = size_divisor
        self.has_logits = has_logits

    def forward(self, x, return_aux: bool = False):
        if not return_aux:
            return self.module(x)
        if not self.has_logits:
            return self.module(x), None
        z = self.module.forward_with_logits(x)
        return z[:, :1], z[:, 1:2]

    def forward_with_logits(self, x):
        return self.module.forward_with_logits(x)


def load_torchscript(path: str | Path, device="cpu") -> tuple[ExportedGenerator, dict]:
    path = Path(path)
    extra = {META_NAME: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        meta = json.loads(extra[META_NAME])
    except Exception as exc:
        raise ckpt_io.CheckpointError(f"{path.name} is corrupt or not a JMMDA-GAN TorchScript file: {exc}") from exc
    if meta.get("format") != TORCHSCRIPT_FORMAT:
        raise ckpt_io.CheckpointError(f"{path.name} is not a JMMDA-GAN TorchScript file (format tag missing)")
    outputs = meta.get("outputs", ["dwi"])  # absent: an export written before the logits were traced
    if outputs not in (["dwi"], OUTPUTS_WITH_LOGITS):
        raise ckpt_io.CheckpointError(f"{path.name}: unknown outputs {outputs!r} in its metadata")
    with_logits = outputs == OUTPUTS_WITH_LOGITS
    if with_logits and not hasattr(module, "forward_with_logits"):
        raise ckpt_io.CheckpointError(f"{path.name}: its metadata lists lesion logits, but the module has no "
                                      "forward_with_logits method")
    return ExportedGenerator(module.eval(), int(meta["size_divisor"]), with_logits), meta


#: largest member read from an uploaded bundle zip (its weights); bigger, or a ratio past 200:1, is refused
MAX_BUNDLE_MEMBER = 1 << 30


def checkpoint_from_model_file(path: str | Path, out: str | Path, name: str | None = None) -> tuple[Path, str]:
    """An externally produced model file as a JMMDA-GAN checkpoint: a checkpoint is checked and returned as is;
    a TorchScript export (``jmmda export-torchscript``) or a MONAI bundle zip (``jmmda export-bundle``, zipped)
    is rebuilt into a checkpoint at ``out`` - the generator built from its stored configuration, its weights
    loaded strictly, and (TorchScript) its output compared with the traced module's. Returns (checkpoint path,
    kind). ``CheckpointError`` names ``name`` (the user's file) for anything else."""
    import zipfile

    path, out = Path(path), Path(out)
    name = name or path.name
    members = ckpt_io.zip_members(path)
    if not members:
        raise ckpt_io.CheckpointError(f"{name} is not a model file (a checkpoint, TorchScript export or bundle zip)")
    if any(m.endswith(f"/extra/{META_NAME}") for m in members):
        net, meta = load_torchscript(path)
        try:
            gcfg, fresh = meta["generator_config"], build_generator(meta["generator_config"])
            # a traced module also lists the non-persistent buffers (fixed wavelet filters) the Python model rebuilds
            fixed = {n for n, _ in fresh.named_buffers()} - set(fresh.state_dict())
            sd = {k: v for k, v in net.module.state_dict().items() if k not in fixed}
            rebuilt = _strict(fresh, sd, name)
            if net.has_logits and not has_lesion_head(rebuilt):
                raise ckpt_io.CheckpointError(f"{name}: it lists lesion logits, but its generator has no lesion head")
            with torch.no_grad():  # an export written before the logits were traced is compared on the synthesis
                diff = _disagreement(rebuilt, net, _example(rebuilt, int(meta["input_channels"]), (96, 96), 3),
                                     net.has_logits)
            ck = {"generator_config": gcfg, "preprocess": meta["preprocess"], "model_card": meta.get("model_card", {}),
                  "lesion_calibration": meta.get("lesion_calibration", {}), "generator": sd}
        except ckpt_io.CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - a tagged file whose metadata or module does not fit, in many ways
            raise ckpt_io.CheckpointError(f"{name}: not a usable JMMDA-GAN TorchScript export ({type(exc).__name__}: {exc})") from exc
        if diff > AGREEMENT_TOL:
            raise ckpt_io.CheckpointError(f"{name}: the rebuilt generator disagrees with the TorchScript module (max |diff| {diff:.3g})")
        kind = "torchscript"
    elif any(m.endswith("configs/inference.json") for m in members):
        with zipfile.ZipFile(path) as z:
            def member(suffix):
                hits = [i for i in z.infolist() if i.filename.endswith(suffix) and not i.is_dir()]
                if len(hits) != 1:
                    raise ckpt_io.CheckpointError(f"{name}: a bundle zip needs exactly one {suffix} (found {len(hits)})")
                i = hits[0]
                if i.file_size > MAX_BUNDLE_MEMBER or i.file_size > 200 * max(i.compress_size, 1):
                    raise ckpt_io.CheckpointError(f"{name}: {suffix} is too large or too compressed to be a model")
                return z.read(i)

            try:
                conf = json.loads(member("configs/inference.json"))
                gcfg, inf = conf["network_def"]["cfg"], conf["inferer"]
                sd = torch.load(io.BytesIO(member("models/model.pt")), map_location="cpu", weights_only=True)
            except ckpt_io.CheckpointError:
                raise
            except Exception as exc:  # noqa: BLE001 - a malformed bundle in any of many ways
                raise ckpt_io.CheckpointError(f"{name}: not a JMMDA-GAN bundle ({type(exc).__name__}: {exc})") from exc
        _strict(build_generator(gcfg), sd, name)
        ck = {"generator_config": gcfg, "preprocess": inf["preprocess"], "model_card": inf.get("model_card", {}),
              "lesion_calibration": inf.get("calibration", {}), "generator": sd}
        kind = "bundle"
    else:
        load_generator(path)  # a readable checkpoint whose weights fit its stored architecture
        return path, "checkpoint"
    ck.update({"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "imported_from": f"{kind}: {name}"})
    ckpt_io.atomic_save(ck, out)
    load_generator(out)
    return out, kind


def _strict(net, state_dict, name: str):
    try:
        net.load_state_dict(state_dict, strict=True)
    except Exception as exc:  # noqa: BLE001 - RuntimeError for mismatches, others for garbage
        raise ckpt_io.CheckpointError(f"{name}: the weights do not fit the stored architecture: {exc}") from exc
    return net.eval()
