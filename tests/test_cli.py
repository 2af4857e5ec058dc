import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from jmmda_model.cli import main
from jmmda_model.clinical.dicom import write_ct_series

from conftest import arr, read
from server_utils import copy_studies


def jmmda(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained through the CLI on 3 sample cases (held-out case last)."""
    base = tmp_path_factory.mktemp("cli")
    store = copy_studies(base / "store", n=3)  # phantom_000..002
    rc = jmmda("train", "--data", store, "--out", base / "run", "--epochs", 1, "--max-steps-per-epoch", 2,
               "--base-channels", 8, "--depth", 2, "--heads", 2, "--batch-size", 4, "--no-progress")
    assert rc == 0
    return base, store, base / "run" / "model.pt"


def test_train_outputs(trained):
    base, _, model = trained
    assert model.exists() and (base / "run" / "checkpoints" / "last.pt").exists()
    assert any((base / "run" / "tensorboard").iterdir())
    status = json.loads((base / "run" / "status.json").read_text())
    assert status["state"] == "finished"
    from jmmda_model.checkpoint import load as load_checkpoint

    assert load_checkpoint(model)["preprocess"]["slab_mm"] == 5.0  # the slice thickness it learnt from (5 mm cases)
    # the lesion calibration holds the temperature and the probability map's operating point, chosen on the same
    # validation cases (metrics.operating_threshold), which inference then serves
    from jmmda_model.checkpoint import load
    from jmmda_model.inference import Synthesizer
    from jmmda_model.metrics import PROB_THRESHOLDS

    cal = load(model)["lesion_calibration"]
    assert cal["temperature"] > 0 and cal["fitted_on"]
    op = cal["operating_point"]
    assert op["threshold"] in PROB_THRESHOLDS and op["fp_per_case"] <= op["max_fp_per_case"] == 2.0
    assert op["cases"] == len(cal["fitted_on"])
    assert Synthesizer(model, device="cpu").operating_threshold == op["threshold"]


def test_evaluate_writes_report_and_figure(trained, capsys):
    base, store, model = trained
    assert jmmda("evaluate", "--model", model, "--data", store, "--ids", "phantom_002", "--out", base / "eval") == 0
    out = capsys.readouterr().out
    assert "| phantom_002 |" in out and "psnr_brain" in out
    report = json.loads((base / "eval" / "report.json").read_text())
    assert report["data_range"] == 1.0 and report["cases"][0]["case"] == "phantom_002"
    assert 0 < report["summary"]["ssim_brain"]["mean"] <= 1
    assert "not for diagnosis" in (base / "eval" / "report.md").read_text()
    png = base / "eval" / "figure.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # the lesion recipe's model has a probability head: calibration and FROC are reported
    prob = report["probability"]
    assert 0 <= prob["ece"] <= 1 and len(prob["froc"]) > 10 and "sensitivity_at_2fp" in prob
    # read at the model's own operating point too (chosen when it was trained), marked in the FROC table
    from jmmda_model.inference import Synthesizer

    op = prob["operating_point"]
    assert op["threshold"] == Synthesizer(model, device="cpu").operating_threshold
    row = next(r for r in prob["froc"] if abs(r["threshold"] - op["threshold"]) < 1e-9)
    assert op["fp_per_case"] == row["fp_per_case"] and op["sensitivity"] == pytest.approx(row["sensitivity"], nan_ok=True)
    assert f"| {op['threshold']:.2f} (operating point) |" in (base / "eval" / "report.md").read_text()
    for name in ("reliability.png", "froc.png"):
        assert (base / "eval" / name).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_figure_shows_every_case(trained, monkeypatch):
    """Every case is in the figure: with 2 cases per page, the 3 cases make pages figure.png and figure_2.png."""
    from jmmda_model import report

    base, store, model = trained
    monkeypatch.setattr(report, "CASES_PER_PAGE", 2)
    from jmmda_model.data import find_cases

    res = report.evaluate_cases(model, find_cases(store), base / "eval_all", progress=False)
    assert [p.split("/")[-1] for p in res["figures"]] == ["figure.png", "figure_2.png"]
    md = (base / "eval_all" / "report.md").read_text()
    assert "![figure](figure.png)" in md and "![figure](figure_2.png)" in md


def test_infer_from_dicom_folder_and_naming_rule(trained, tmp_path, capsys):
    _, store, model = trained
    ct = read(store / "phantom_002.nii.gz")
    write_ct_series(ct, tmp_path / "ctdcm")
    assert jmmda("infer", "--model", model, "--ct", tmp_path / "ctdcm", "--out", tmp_path / "dwi.nii.gz") == 2
    assert "must contain 'synthetic'" in capsys.readouterr().err
    assert jmmda("infer", "--model", model, "--ct", tmp_path / "ctdcm", "--out", tmp_path / "x_synthetic.nii.gz",
                 "--save-probability", tmp_path / "prob.nii.gz") == 2  # the map is synthetic too: its name says so
    assert "--save-probability" in capsys.readouterr().err and not (tmp_path / "x_synthetic.nii.gz").exists()
    out = tmp_path / "case_synthetic_dwi.nii.gz"
    assert jmmda("infer", "--model", model, "--ct", tmp_path / "ctdcm", "--out", out, "--save-mask", tmp_path / "m.nii.gz",
                 "--save-probability", tmp_path / "case_synthetic_prob.nii.gz") == 0
    img = read(out)
    assert img.GetSize() == ct.GetSize() and np.allclose(img.GetOrigin(), ct.GetOrigin(), atol=1e-3)
    assert "SYNTHETIC" in img.GetMetaData("descrip")
    info = json.loads(capsys.readouterr().out)
    assert info["mask_source"] == "automatic (CT)" and info["views"].startswith("one view")
    two = tmp_path / "two_synthetic_dwi.nii.gz"
    assert jmmda("infer", "--model", model, "--ct", tmp_path / "ctdcm", "--out", two, "--flip-average") == 0
    assert "mirror image" in json.loads(capsys.readouterr().out)["views"]  # flip averaging, said
    assert np.abs(arr(read(two)) - arr(img)).max() > 1e-4  # not the same answer
    # DICOM export of that result, referencing the CT series
    assert jmmda("export-dicom", "--synthetic", out, "--ct-dicom", tmp_path / "ctdcm", "--out", tmp_path / "syndcm",
                 "--probability", tmp_path / "case_synthetic_prob.nii.gz") == 0
    ds = pydicom.dcmread(sorted((tmp_path / "syndcm").iterdir())[0])
    assert "SYNTHETIC" in ds.SeriesDescription
    pm = pydicom.dcmread(tmp_path / "syndcm" / "SYNTHETIC_INFARCT_PROBABILITY.dcm")
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30" and "SYNTHETIC" in pm.SeriesDescription


def test_errors_exit_2_with_message(trained, tmp_path, capsys):
    _, store, model = trained
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"nope")
    assert jmmda("infer", "--model", model, "--ct", bad, "--out", tmp_path / "x_synthetic.nii.gz") == 2
    assert "error:" in capsys.readouterr().err
    broken = tmp_path / "broken.pt"
    broken.write_bytes(model.read_bytes()[:1000])
    assert jmmda("infer", "--model", broken, "--ct", store / "phantom_000.nii.gz", "--out", tmp_path / "y_synthetic.nii.gz") == 2
    assert "corrupt" in capsys.readouterr().err
    assert jmmda("train", "--data", tmp_path, "--out", tmp_path / "r") == 2
    # the hemispheric difference's noise scale and the slab thickness: refused where they cannot be honoured, before
    # any training
    for extra, said in ((("--recipe", "legacy", "--mirror-noise-ref-hu", 3.5), "legacy recipe"),
                        (("--mirror-noise-ref-hu", 0), "mirror_noise_ref_hu"),
                        (("--mirror-noise-ref-hu", 3.5, "--noise-augment-hu", 5), "--noise-augment-hu"),
                        (("--slab-mm", 0.1), "slab_mm")):
        assert jmmda("train", "--data", store, "--out", tmp_path / "nn", *extra) == 2
        assert said in capsys.readouterr().err and not (tmp_path / "nn").exists()


def test_console_script_and_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "jmmda_model", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "make-sample-data" in r.stdout and "export-dicom" in r.stdout


def test_make_sample_data(tmp_path):
    assert jmmda("make-sample-data", "--out", tmp_path / "s", "-n", 1, "--seed", 77) == 0
    assert (tmp_path / "s" / "phantom_077.nii.gz").exists()
    assert arr(read(tmp_path / "s" / "labels" / "brainmask" / "phantom_077.nii.gz")).sum() > 0
