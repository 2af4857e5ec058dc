"""Thin-slice CT is synthesised on slabs of the model's own slice thickness (PreprocessConfig.slab_mm).

The models learn from 5 mm slices. A thin series (0.5-2 mm) fed slice by slice shows the network noise and partial
volume it never saw: on 16 thin phantoms the shipped demo painted 6x the false-bright brain it paints on slabs
(benchmarks/records/thin_slabs_2026-12-06). The thin series here are written by the tests themselves: every 5 mm
slice of a sample case repeated as five 1 mm slices, so the slabs are exactly the 5 mm series."""
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DEMO_MODEL, SAMPLE, arr

K = 5


def thin_copy(img: sitk.Image, dtype, noise_hu: float = 0.0) -> sitk.Image:
    """Each slice of ``img`` as K slices of a K times thinner spacing, placed so that K consecutive thin slices
    cover the thick slice (their centre is its centre)."""
    a = np.repeat(sitk.GetArrayFromImage(img), K, axis=0).astype(np.float32)
    if noise_hu:
        a += np.random.default_rng(0).normal(0.0, noise_hu, a.shape).astype(np.float32)
    out = sitk.GetImageFromArray(np.round(a).astype(dtype))
    sx, sy, sz = img.GetSpacing()
    out.SetSpacing((sx, sy, sz / K))
    out.SetDirection(img.GetDirection())
    out.SetOrigin(img.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, -(K - 1) / (2.0 * K))))
    return out


def test_slab_arithmetic():
    from jmmda_model.preprocess import from_slabs, slab_centres, slab_factor, to_slabs

    assert [slab_factor(dz, 5.0) for dz in (5.0, 3.0, 2.5, 2.0, 1.25, 1.0, 0.625, 0.5, 0.45)] == [1, 1, 2, 2, 4, 5, 8, 10, 11]
    assert slab_factor(0.5, None) == 1 and slab_factor(0.0, 5.0) == 1
    a = np.arange(23, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    s = to_slabs(a, 5)  # 4 whole slabs and one of the 3 slices left over
    np.testing.assert_allclose(s[:, 0, 0], [2, 7, 12, 17, 21])
    np.testing.assert_allclose(slab_centres(23, 5), [2, 7, 12, 17, 21])
    back = from_slabs(s, 23, 5)
    np.testing.assert_allclose(back[2:22, 1, 2], np.arange(2, 22))  # linear between the centres: a ramp survives
    assert back[0, 0, 0] == back[1, 0, 0] == 2 and back[22, 0, 0] == 21  # the end slabs held beyond their centres
    assert from_slabs(s[:1], 4, 5).shape == (4, 2, 3) and (from_slabs(s[:1], 4, 5) == 2).all()
    np.testing.assert_array_equal(to_slabs(a, 1), a)
    with pytest.raises(ValueError, match="slabs given"):
        from_slabs(s[:3], 23, 5)


def test_slab_setting_is_validated_and_absent_from_older_models(tmp_path):
    from jmmda_model.checkpoint import CheckpointError, atomic_save, load
    from jmmda_model.inference import Synthesizer
    from jmmda_model.preprocess import PreprocessConfig

    assert PreprocessConfig().slab_mm is None and PreprocessConfig.from_dict({}).slab_mm is None
    assert PreprocessConfig.from_dict({"slab_mm": 5}).slab_mm == 5
    for bad in (0.1, 25.0, True, "5", float("nan")):
        with pytest.raises(ValueError, match="slab_mm"):
            PreprocessConfig(slab_mm=bad)
    ck = load(DEMO_MODEL)
    ck["preprocess"]["slab_mm"] = -1
    atomic_save(ck, tmp_path / "tampered_slab.pt")
    with pytest.raises(CheckpointError, match="tampered_slab.pt.*slab_mm"):  # refused, naming the file
        Synthesizer(tmp_path / "tampered_slab.pt", device="cpu")


def test_the_demo_model_records_its_slice_thickness():
    from jmmda_model.checkpoint import load
    from jmmda_model.phantom import PhantomConfig

    assert load(DEMO_MODEL)["preprocess"]["slab_mm"] == PhantomConfig().spacing[2] == 5.0


@pytest.fixture(scope="module")
def demo():
    from jmmda_model.inference import Synthesizer

    return Synthesizer(DEMO_MODEL, device="cpu")


def test_a_thin_series_gives_the_synthesis_of_its_slabs(demo, tmp_path):
    """Slabs that are exactly the 5 mm series: the thin series' synthesis and probability map at each slab's
    centre slice are the 5 mm series' own, interpolated linearly between the centres; the response says so."""
    from jmmda_model.clinical.imageio import read_image

    ct5, m5 = read_image(SAMPLE / "phantom_003.nii.gz", "CT"), read_image(SAMPLE / "labels/brainmask/phantom_003.nii.gz", "mask")
    paths = {}
    thin_mask = thin_copy(m5, np.uint8)
    a = arr(thin_mask).copy()
    top = int(np.flatnonzero(a.reshape(a.shape[0], -1).any(1))[-1])
    assert top % K == K - 1  # the last brain slice closes a slab
    a[top + 1 : top + 3] = a[top]  # brain on 2 of the next slab's 5 slices: that slab has no brain of its own
    m1 = sitk.GetImageFromArray(a)
    m1.CopyInformation(thin_mask)
    for name, img in (("ct", thin_copy(ct5, np.int16)), ("mask", m1)):
        paths[name] = tmp_path / f"thin_{name}.nii.gz"
        sitk.WriteImage(img, str(paths[name]))
    ct1, m1 = read_image(paths["ct"], "CT"), read_image(paths["mask"], "mask")
    y5, _, info5, p5 = demo(ct5, m5, return_probability=True)
    y1, _, info1, p1 = demo(ct1, m1, return_probability=True)
    assert "slabs" not in info5
    assert "averaged 5 at a time" in info1["slabs"] and "5.00 mm" in info1["slabs"]
    assert y1.GetSize() == ct1.GetSize() and y1.GetSpacing() == ct1.GetSpacing() and y1.GetOrigin() == ct1.GetOrigin()
    b5, b1 = arr(m5) > 0, arr(m1) > 0
    a5, a1, q5, q1 = arr(y5), arr(y1), arr(p5), arr(p1)
    assert (a1[~b1] == 0).all() and (q1[~b1] == 0).all()
    # the thin brain past the last slab with brain takes that slab's synthesis (not a fade towards nothing)
    np.testing.assert_allclose(a1[top + 1 : top + 3][b1[top + 1 : top + 3]],
                               np.broadcast_to(a1[top], a1[top + 1 : top + 3].shape)[b1[top + 1 : top + 3]], atol=1e-6)
    np.testing.assert_allclose(a1[K // 2 :: K][b5], a5[b5], atol=1e-6)
    np.testing.assert_allclose(q1[K // 2 :: K][b5], q5[b5], atol=1e-6)
    mid = a1[K // 2 + 1 : -K : K]  # one thin slice past each centre: a fifth of the way to the next slab
    both = b5[:-1] & b5[1:] & b1[K // 2 + 1 : -K : K]
    np.testing.assert_allclose(mid[both], (0.8 * a5[:-1] + 0.2 * a5[1:])[both], atol=1e-5)


def test_thin_training_cases_are_loaded_as_slabs(tmp_path):
    """``jmmda train`` on thin cases learns from the slabs that inference will give the model."""
    from jmmda_model.data import find_cases, load_case
    from jmmda_model.preprocess import PreprocessConfig

    store = tmp_path / "thin"
    for tag, dtype in (("", np.int16), ("dwi", np.int16), ("brainmask", np.uint8), ("lesion", np.uint8)):
        folder = store / "labels" / tag if tag else store
        folder.mkdir(parents=True, exist_ok=True)
        src = SAMPLE / "labels" / tag / "phantom_001.nii.gz" if tag else SAMPLE / "phantom_001.nii.gz"
        sitk.WriteImage(thin_copy(sitk.ReadImage(str(src)), dtype), str(folder / "thin_001.nii.gz"))
    thick = next(c for c in find_cases(SAMPLE) if c.id == "phantom_001")
    (case,) = find_cases(store)
    pre = PreprocessConfig(slab_mm=5.0)
    a, b = load_case(case, pre), load_case(thick, pre)
    assert a.spacing_zyx == pytest.approx(b.spacing_zyx) and a.ct_hu.shape == b.ct_hu.shape
    for k in ("ct_hu", "brain", "lesion", "dwi", "mirror_hu"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), atol=1e-5, err_msg=k)
    assert b.lesion.any() and set(np.unique(a.lesion)) <= {0, 1}
    assert load_case(case, PreprocessConfig()).ct_hu.shape[0] == K * b.ct_hu.shape[0]  # without: its own slices


def test_training_records_the_slice_thickness_it_learnt_from(tmp_path, tiny_gcfg):
    from jmmda_model.data import find_cases, load_case
    from jmmda_model.preprocess import PreprocessConfig
    from jmmda_model.trainer import TrainConfig, Trainer

    cases = [load_case(c, PreprocessConfig()) for c in find_cases(SAMPLE)[:2]]
    for given, expected in ((None, 5.0), (3.0, 3.0)):
        cfg = TrainConfig(generator=tiny_gcfg.to_dict(), preprocess=PreprocessConfig(slab_mm=given).to_dict(), device="cpu")
        t = Trainer(cfg, tmp_path / f"t{given}")
        t.prepare(cases)
        assert t.pre.slab_mm == expected



def test_the_thin_slice_benchmark_has_a_slice_by_slice_arm(tmp_path):
    """benchmarks/thin_slice.py --native-too runs the same model with its slab thickness unset, nothing else changed."""
    import sys

    import torch

    from conftest import ROOT
    from jmmda_model.checkpoint import load

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import thin_slice

    native, shipped = load(thin_slice.native_copy(str(DEMO_MODEL), tmp_path / "native.pt")), load(DEMO_MODEL)
    assert native["preprocess"] == {**shipped["preprocess"], "slab_mm": None} and shipped["preprocess"]["slab_mm"] == 5.0
    assert all(torch.equal(native["generator"][k], v) for k, v in shipped["generator"].items())
