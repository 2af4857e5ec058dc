"""Deployable model files: TorchScript export and the MONAI Bundle (verify_metadata, verify_net_in_out, run)."""
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import DEMO_MODEL, ROOT, SAMPLE
from jmmda_model.checkpoint import CheckpointError
from jmmda_model.export import export_torchscript, is_torchscript, load_torchscript
from jmmda_model.inference import Synthesizer

CASE = "phantom_007"
CT = SAMPLE / f"{CASE}.nii.gz"
MASK = SAMPLE / "labels" / "brainmask" / f"{CASE}.nii.gz"
SHIPPED_BUNDLE = ROOT / "apps" / "ct2dwi" / "model" / "bundle"
SCHEMA = ROOT / "jmmda_model" / "resources" / "bundle_metadata_schema.json"
ENV = {**os.environ, "OMP_NUM_THREADS": "2"}


def _py(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=ENV)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`jmmda infer` with the demo checkpoint on the sample case."""
    out = tmp_path_factory.mktemp("ref") / "SYNTHETIC_ref.nii.gz"
    r = _py("-m", "jmmda_model.cli", "infer", "--model", str(DEMO_MODEL), "--ct", str(CT), "--mask", str(MASK),
            "--out", str(out), "--device", "cpu", "--save-probability", str(out.with_name("SYNTHETIC_ref_prob.nii.gz")))
    assert r.returncode == 0, r.stderr[-2000:]
    REFERENCE["probability"] = sitk.ReadImage(str(out.with_name("SYNTHETIC_ref_prob.nii.gz")))
    return sitk.ReadImage(str(out))


REFERENCE: dict = {}  # the reference run's infarct-probability map


def _same(a: sitk.Image, b: sitk.Image, tol: float):
    assert a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin()
    assert a.GetDirection() == b.GetDirection()
    diff = np.abs(sitk.GetArrayFromImage(a) - sitk.GetArrayFromImage(b)).max()
    assert diff <= tol, f"max |difference| {diff:.3g}"
    assert "SYNTHETIC" in b.GetMetaData("descrip")


def test_torchscript_export_agrees_with_the_checkpoint_and_jmmda_infer_runs_it(tmp_path, reference):
    """The export reproduces the checkpoint: slices, and `jmmda infer` volumes - the synthesis and, since the lesion
    logits are traced too, the infarct-probability map."""
    ts = tmp_path / "jmmda.ts"
    r = _py("-m", "jmmda_model.cli", "export-torchscript", "--model", str(DEMO_MODEL), "--out", str(ts))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "lesion logits (probability map)" in r.stdout
    assert is_torchscript(ts) and not is_torchscript(DEMO_MODEL)
    net, meta = load_torchscript(ts)
    assert meta["output"].startswith("SYNTHETIC") and meta["agreement_max_abs_diff"] <= 1e-5
    assert meta["outputs"] == ["dwi", "lesion_logit"] and net.has_logits
    # slice level: another slice size than the traced one, on real model input
    eager = Synthesizer(DEMO_MODEL, device="cpu")
    from jmmda_model.data import model_input

    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(CT))).astype(np.float32)[:, :100, :90]
    brain = (sitk.GetArrayFromImage(sitk.ReadImage(str(MASK)))[:, :100, :90] > 0).astype(np.uint8)
    x = model_input(ct, brain, eager.pre, (5.0, 1.8, 1.8), ct[:, :, ::-1])[10:14]  # any mirror image will do here
    ys, ls = Synthesizer(ts, device="cpu").predict_slices(x, with_logits=True)
    ye, le = eager.predict_slices(x, with_logits=True)
    assert np.abs(ys - ye).max() < 1e-5 and np.abs(ls - le).max() < 1e-4 * max(1.0, np.abs(le).max())
    # volume level: jmmda infer with the .ts file = jmmda infer with the checkpoint, probability map included
    out = tmp_path / "SYNTHETIC_ts.nii.gz"
    prob = tmp_path / "SYNTHETIC_ts_prob.nii.gz"
    r = _py("-m", "jmmda_model.cli", "infer", "--model", str(ts), "--ct", str(CT), "--mask", str(MASK), "--out", str(out),
            "--device", "cpu", "--save-probability", str(prob))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["model_format"] == "torchscript"
    _same(reference, sitk.ReadImage(str(out)), 1e-5)
    _same(REFERENCE["probability"], sitk.ReadImage(str(prob)), 1e-5)


def test_an_export_made_before_the_logits_still_serves_and_says_why_it_has_no_probability(tmp_path):
    """An export of the forward pass alone (as written before release 0.2.1: no `outputs` in its metadata) loads,
    synthesises as the checkpoint does, has no probability map and says so; `publish` still rebuilds it. A file whose
    metadata lists the logits without the traced method, or an unknown output list, is refused, naming it."""
    from jmmda_model.export import META_NAME, checkpoint_from_model_file, load_generator

    export_torchscript(DEMO_MODEL, tmp_path / "new.ts")
    _, meta = load_torchscript(tmp_path / "new.ts")
    net, _ = load_generator(DEMO_MODEL)

    def save(name, m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shape checks, as in export_torchscript
            traced = torch.jit.trace(net, torch.rand(1, meta["input_channels"], 64, 64), check_trace=False)
        torch.jit.save(traced, str(tmp_path / name), _extra_files={META_NAME: json.dumps(m)})
        return tmp_path / name

    old = save("old.ts", {k: v for k, v in meta.items() if k != "outputs"})
    syn = Synthesizer(old, device="cpu")
    assert not syn.has_probability
    x = torch.rand(3, meta["input_channels"], 48, 56).numpy()
    y, logits = syn.predict_slices(x, with_logits=True)
    assert logits is None and np.abs(y - Synthesizer(DEMO_MODEL, device="cpu").predict_slices(x)).max() < 1e-5
    r = _py("-m", "jmmda_model.cli", "infer", "--model", str(old), "--ct", str(CT), "--mask", str(MASK), "--out",
            str(tmp_path / "SYNTHETIC_old.nii.gz"), "--save-probability", str(tmp_path / "SYNTHETIC_old_p.nii.gz"))
    assert r.returncode == 2 and "before release 0.2.1" in r.stderr and not (tmp_path / "SYNTHETIC_old.nii.gz").exists()
    ck, kind = checkpoint_from_model_file(old, tmp_path / "rebuilt.pt")
    assert kind == "torchscript" and Synthesizer(ck, device="cpu").has_probability
    for name, outputs, msg in (("lying.ts", ["dwi", "lesion_logit"], "no forward_with_logits"),
                               ("odd.ts", ["dwi", "segmentation"], "unknown outputs")):
        with pytest.raises(CheckpointError, match=f"{name}.*{msg}"):
            load_torchscript(save(name, {**meta, "outputs": outputs}))


def test_lesion_logits_are_claimed_only_where_the_generator_gives_them():
    """has_lesion_head (what inference and the export trust) is true exactly where return_aux gives logits, and
    forward_with_logits is the synthesis and that logit side by side; the pix2pix U-Net's aux_lesion gives none."""
    from jmmda_model.inference import predict_slices
    from jmmda_model.networks import GeneratorConfig, build_generator, has_lesion_head

    for extra, expect in (({"residual_prior": True}, True), ({"aux_lesion": True}, True), ({}, False),
                          ({"arch": "pix2pix", "residual_prior": True}, True),
                          ({"arch": "pix2pix", "aux_lesion": True}, False)):
        cfg = GeneratorConfig(base_channels=8, depth=2, **extra)
        net = build_generator(cfg).eval()
        x = torch.rand(2, cfg.input_channels, 32, 32)
        with torch.no_grad():
            out, logit = net(x, return_aux=True)
            assert has_lesion_head(net) == expect == (logit is not None), extra
            if expect:
                z = net.forward_with_logits(x)
                assert torch.equal(z[:, :1], out) and torch.equal(z[:, 1:], logit)
        # inference asks for logits only where they exist (a pix2pix U-Net with aux_lesion crashed here before)
        y, lg = predict_slices(net, x.numpy(), torch.device("cpu"), with_logits=True)
        assert y.shape == (2, 32, 32) and (lg is not None) == expect


def test_corrupt_or_foreign_exports_are_refused(tmp_path):
    ts = tmp_path / "jmmda.ts"
    export_torchscript(DEMO_MODEL, ts)
    data = ts.read_bytes()
    (tmp_path / "cut.ts").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.ts"):
        Synthesizer(tmp_path / "cut.ts", device="cpu")
    plain = torch.jit.trace(torch.nn.Conv2d(4, 1, 3), torch.rand(1, 4, 8, 8))
    torch.jit.save(plain, str(tmp_path / "other.ts"))
    with pytest.raises(CheckpointError, match="other.ts"):
        Synthesizer(tmp_path / "other.ts", device="cpu")
    folder = tmp_path / "exports"
    folder.mkdir()
    r = _py("-m", "jmmda_model.cli", "export-torchscript", "--model", str(DEMO_MODEL), "--out", str(folder))
    assert r.returncode == 2 and "is a folder" in r.stderr and not list(folder.iterdir())
    r = _py("-m", "jmmda_model.cli", "infer", "--model", str(tmp_path / "cut.ts"), "--ct", str(CT), "--out",
            str(tmp_path / "SYNTHETIC_x.nii.gz"))
    assert r.returncode == 2 and "cut.ts" in r.stderr


def _bundle_checks(bundle: Path, tmp_path: Path, reference):
    cfg, meta = bundle / "configs" / "inference.json", bundle / "configs" / "metadata.json"
    r = _py("-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta), "--filepath", str(SCHEMA))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "metadata is verified with no error" in r.stdout + r.stderr
    r = _py("-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file", str(meta), "--config_file", str(cfg),
            "--n", "12", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "data shape of network is verified with no error" in r.stdout + r.stderr
    out = tmp_path / "bundle_out"
    r = _py("-m", "monai.bundle", "run", "--config_file", str(cfg), "--meta_file", str(meta), "--bundle_root", str(bundle),
            "--image", str(CT), "--mask", str(MASK), "--output_dir", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    _same(reference, sitk.ReadImage(str(out / f"SYNTHETIC_DWI_{CASE}.nii.gz")), 1e-6)
    # the second output: declared in the metadata, written by the run, equal to jmmda infer --save-probability
    assert "infarct_probability" in json.loads(meta.read_text())["network_data_format"]["outputs"]
    _same(REFERENCE["probability"], sitk.ReadImage(str(out / f"SYNTHETIC_INFARCT_PROBABILITY_{CASE}.nii.gz")), 1e-6)
    readme = (bundle / "docs" / "README.md").read_text()
    assert "SYNTHETIC" in readme and "not for diagnosis" in readme and "phantom" in readme
    assert "Apache" in (bundle / "LICENSE").read_text()


def test_export_bundle_verifies_and_its_inference_matches_jmmda_infer(tmp_path, reference):
    bundle = tmp_path / "jmmda_bundle"
    r = _py("-m", "jmmda_model.cli", "export-bundle", "--model", str(DEMO_MODEL), "--out", str(bundle))
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} == {
        "configs/metadata.json", "configs/inference.json", "models/model.pt", "models/model.ts", "docs/README.md", "LICENSE"}
    _bundle_checks(bundle, tmp_path, reference)
    # exporting over a bundle needs --overwrite; a metadata that drops the SYNTHETIC declaration fails verification
    r = _py("-m", "jmmda_model.cli", "export-bundle", "--model", str(DEMO_MODEL), "--out", str(bundle))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta.pop("synthetic_output")
    bad = tmp_path / "bad_metadata.json"
    bad.write_text(json.dumps(meta))
    r = _py("-m", "monai.bundle", "verify_metadata", "--meta_file", str(bad), "--filepath", str(SCHEMA))
    assert r.returncode != 0 and "synthetic_output" in r.stderr


def test_shipped_demo_bundle_is_the_demo_model(tmp_path, reference):
    """apps/ct2dwi/model/bundle is the demo checkpoint in MONAI Bundle form (regenerate with jmmda export-bundle)."""
    from jmmda_model.checkpoint import load

    state = torch.load(SHIPPED_BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    demo = load(DEMO_MODEL)["generator"]
    assert state.keys() == demo.keys() and all(torch.equal(state[k], demo[k]) for k in demo)
    meta = json.loads((SHIPPED_BUNDLE / "configs" / "metadata.json").read_text())
    from jmmda_model.export import sha256

    assert sha256(DEMO_MODEL)[:16] in meta["changelog"]["1.0.0"]
    # its TorchScript file is this release's export: the same generator, traced with its lesion logits
    ts_net, ts_meta = load_torchscript(SHIPPED_BUNDLE / "models" / "model.ts")
    assert ts_net.has_logits and ts_meta["source_sha256"] == sha256(DEMO_MODEL)
    copy = tmp_path / "shipped"
    shutil.copytree(SHIPPED_BUNDLE, copy)  # run from a copy: the bundle run writes nothing into the repository
    _bundle_checks(copy, tmp_path, reference)


def test_the_server_infer_task_serves_the_torchscript_export(tmp_path, reference):
    """--conf model_format torchscript: the served version is exported once (checked) and that file runs, with its
    probability map; an export cached by an earlier release (another revision in its name) is not reused."""
    sys.path.insert(0, str(ROOT / "apps" / "ct2dwi"))
    from ct2dwi_app.infer import CT2DWIInfer
    from ct2dwi_app.versions import ModelVersions

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(DEMO_MODEL, model_dir / "jmmda_demo.pt")
    task = CT2DWIInfer(ModelVersions(model_dir, model_dir / "jmmda_demo.pt"), device="cpu", model_format="torchscript")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    from jmmda_model.export import EXPORT_REVISION, sha256

    stale = model_dir / "exported" / f"v0-{sha256(DEMO_MODEL)[:16]}.ts"  # the cache name before revisions
    stale.parent.mkdir()
    stale.write_bytes(b"an export of an earlier release")
    path, info = task.run(CT, MASK, out_dir, ct_name=CT.name, mask_name=MASK.name, probability=True)
    assert info["model_format"] == "torchscript" and info["served_file"].endswith(f"-r{EXPORT_REVISION}.ts")
    exported = list((model_dir / "exported").glob(f"v0-*-r{EXPORT_REVISION}.ts"))
    assert len(exported) == 1 and is_torchscript(exported[0])
    _same(reference, sitk.ReadImage(str(path)), 1e-5)
    _same(REFERENCE["probability"], sitk.ReadImage(str(out_dir / info["probability_file"])), 1e-5)
    with pytest.raises(ValueError, match="model_format"):
        CT2DWIInfer(ModelVersions(model_dir), model_format="onnx")
    # --conf flip_average true: the export, averaged with its mirror image, and the answer says so
    flip = CT2DWIInfer(ModelVersions(model_dir, model_dir / "jmmda_demo.pt"), device="cpu", model_format="torchscript",
                       flip_average=True)
    (out_dir / "f").mkdir()
    path_f, info_f = flip.run(CT, MASK, out_dir / "f", ct_name=CT.name, mask_name=MASK.name)
    assert "mirror image" in info_f["views"] and info["views"].startswith("one view") and flip.info()["config"]["flip_average"]
    assert np.abs(sitk.GetArrayFromImage(sitk.ReadImage(str(path_f))) - sitk.GetArrayFromImage(reference)).max() > 1e-4
    with pytest.raises(ValueError, match="flip_average"):
        CT2DWIInfer(ModelVersions(model_dir), flip_average="yes")
