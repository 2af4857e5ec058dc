"""Bad input gets a clear InputError, never a crash or a silently wrong image."""
import numpy as np
import pytest
import SimpleITK as sitk

from jmmda_model.clinical import imageio
from jmmda_model.clinical.brainmask import ct_brain_mask
from jmmda_model.clinical.geometry import from_axial, to_axial
from jmmda_model.clinical.imageio import check_ct, check_mask, read_image
from jmmda_model.errors import InputError

from conftest import arr, make_image, read


def test_corrupt_empty_missing_files(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b this is not a nifti" * 10)
    with pytest.raises(InputError, match="corrupt"):
        read_image(bad, "CT")
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"not an image at all" * 50)
    with pytest.raises(InputError, match="corrupt or unsupported"):
        read_image(junk, "CT")
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(empty, "CT")
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.nii.gz", "CT")
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path, "CT")  # a folder without DICOM


def test_truncated_file(tmp_path, sample_cases):
    data = sample_cases[0].ct.read_bytes()
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        read_image(trunc, "CT")


def test_2d_and_vector_images(tmp_path):
    p = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((64, 64), np.int16)), str(p))
    with pytest.raises(InputError, match="3-D volume"):
        read_image(p)
    v = sitk.GetImageFromArray(np.zeros((4, 8, 8, 3), np.float32), isVector=True)
    with pytest.raises(InputError, match="scalar"):
        imageio.check_volume(v)


def test_huge_volume_refused(monkeypatch, sample_cases):
    monkeypatch.setattr(imageio, "MAX_VOXELS", 1000)
    with pytest.raises(InputError, match="exceeds the limit"):
        read_image(sample_cases[0].ct)


def test_non_ct_refused(sample_cases):
    dwi = read(sample_cases[0].dwi)  # an MR image: no air at -1000 HU
    with pytest.raises(InputError, match="Hounsfield"):
        check_ct(dwi)
    ct = read(sample_cases[0].ct)
    check_ct(ct)
    nan = sitk.Cast(ct, sitk.sitkFloat32)
    a = arr(nan)
    a[0, 0, 0] = np.nan
    bad = sitk.GetImageFromArray(a)
    bad.CopyInformation(ct)
    with pytest.raises(InputError, match="NaN"):
        check_ct(bad)


def test_mask_checks(sample_cases):
    ct = read(sample_cases[0].ct)
    mask = read(sample_cases[0].brainmask)
    assert check_mask(mask, ct).sum() > 0
    shifted = sitk.Image(mask)
    shifted.SetOrigin(tuple(o + 7.5 for o in mask.GetOrigin()))
    with pytest.raises(InputError, match="geometry does not match"):
        check_mask(shifted, ct)
    cropped = mask[:, :, :10]
    with pytest.raises(InputError, match="geometry does not match"):
        check_mask(cropped, ct)
    empty = sitk.Image(mask) * 0
    with pytest.raises(InputError, match="empty"):
        check_mask(empty, ct)
    tiny = sitk.Image(mask) * 0
    tiny[40, 50, 18] = 1
    with pytest.raises(InputError, match="cannot be a brain mask"):
        check_mask(tiny, ct)


@pytest.mark.parametrize("code", ["RAS", "LPI", "PIL", "SRA"])
def test_axial_reorientation_is_exact(code, sample_cases):
    ct = sitk.DICOMOrient(read(sample_cases[1].ct), code)
    ax = to_axial(ct)
    assert ax.GetSize()[2] == 32  # slices along the superior axis
    back = from_axial(ax, ct)
    assert back.GetSize() == ct.GetSize() and back.GetDirection() == ct.GetDirection()
    assert np.array_equal(arr(back), arr(ct))


def test_auto_brain_mask_dice(sample_cases):
    dices = []
    for c in sample_cases[:3]:
        auto = arr(ct_brain_mask(read(c.ct))) > 0
        ref = arr(read(c.brainmask)) > 0
        dices.append(2 * (auto & ref).sum() / (auto.sum() + ref.sum()))
    assert min(dices) > 0.9, dices


def test_auto_brain_mask_fails_clearly_without_head():
    air = make_image(np.full((10, 40, 40), -1000, np.int16))
    with pytest.raises(InputError, match="brain mask"):
        ct_brain_mask(air)


def test_inplane_downsampling_is_anti_aliased():
    """10 HU white noise on a 0.45 mm CT comes out near 2.5 HU at 1.8 mm (area-average-like), not ~7 HU."""
    from jmmda_model.clinical.geometry import resample_inplane

    rng = np.random.default_rng(0)
    a = (30 + rng.normal(0, 10, (4, 512, 512))).astype(np.float32)
    img = make_image(a, spacing=(0.45, 0.45, 5.0))
    out = arr(resample_inplane(img, (1.8, 1.8)))
    inner = out[:, 20:-20, 20:-20]
    assert out.shape[1] == 128 and abs(float(inner.mean()) - 30) < 0.2
    assert 1.5 < float(inner.std()) < 3.5, float(inner.std())
    labels = arr(resample_inplane(make_image((a > 30).astype(np.uint8), spacing=(0.45, 0.45, 5.0)), (1.8, 1.8), label=True))
    assert set(np.unique(labels)) <= {0, 1}  # labels are never smoothed
