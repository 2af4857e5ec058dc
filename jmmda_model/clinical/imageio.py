"""Reading and validating CT / mask / DWI volumes, with clear errors for bad input.

Files are checked *before* their voxels are read: the header's size and data type against the voxel limit,
the data length against the header (truncated files, and data past what the header declares, e.g. a gzip bomb,
are refused while decompressing in bounded chunks), NaN/Inf voxels in NIfTI float data (ITK reads them as 0),
and MetaImage/NRRD headers that point at a detached data file. Error messages name the user's file
(``name``), never a server-side temporary path.
"""
from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .dicom import read_dicom_series
from .geometry import same_geometry

#: refuse volumes above this many voxels (default ~ 512 x 512 x 1000); override with JMMDA_MAX_VOXELS
MAX_VOXELS = int(os.environ.get("JMMDA_MAX_VOXELS", str(512 * 512 * 1000)))
#: memory one volume may take while it is read and processed (MB; JMMDA_MEMORY_BUDGET_MB): estimated from the
#: header before any voxel is decoded as voxels x (stored bytes per voxel + WORK_BYTES_PER_VOXEL)
MEMORY_BUDGET_MB = int(os.environ.get("JMMDA_MEMORY_BUDGET_MB", "3072"))
#: float32 working copies per voxel the pipeline holds at its peak (HU volume, axial copy, resampled grid, output)
WORK_BYTES_PER_VOXEL = 16
#: data past what a NIfTI header declares that is still tolerated (padding some writers add)
MAX_TRAILING_BYTES = 1 << 20
#: single-file formats accepted from untrusted sources (uploads): no detached headers (.mhd/.nhdr/.hdr)
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
SYNTHETIC_NOTE = "SYNTHETIC DWI (JMMDA-GAN) - not for diagnosis"
_CHUNK = 1 << 22


def image_suffix(name: str) -> str | None:
    """The accepted single-file image suffix of ``name`` (case-insensitive), or None."""
    low = name.lower()
    return next((s for s in UPLOAD_SUFFIXES if low.endswith(s)), None)


def read_image(path: str | Path, what: str = "image", name: str | None = None, single_file: bool = False,
               series_uid: str | None = None) -> sitk.Image:
    """Reads a volume after :func:`probe_image`; ``name`` is how messages refer to the file (default its
    file name); ``single_file`` refuses formats whose header points at another file (for uploads)."""
    path = Path(path)
    name = name or path.name
    if not path.exists():
        raise InputError(f"{what}: file not found: {name}")
    if path.is_dir():
        img = read_dicom_series(path, series_uid)  # a folder means a DICOM series
    else:
        probe_image(path, what, name, single_file=single_file)
        try:
            header = _nifti_header(path) if path.name.lower().endswith((".nii", ".nii.gz")) else None
            if header is not None and _decoded_as_float32(header[1], header[2]):
                img = _read_float64_nifti_as_float32(path, header)
            else:
                img = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise InputError(f"{what}: cannot read {name} as a medical image (corrupt or unsupported format)") from exc
    check_volume(img, what)
    return img


def _opener(path: Path):
    """gzip.open for .gz files, else open (both stream: nothing is decompressed ahead)."""
    return gzip.open if path.name.lower().endswith(".gz") else open


def _parse_nifti_header(raw: bytes):
    """(header, shape, dtype, data offset) from a NIfTI-1/2 file's first 540 bytes; nibabel's exception when broken."""
    import nibabel as nib

    hdr_cls = nib.Nifti2Header if len(raw) >= 540 and int.from_bytes(raw[:4], "little") in (540, 540 << 24) else nib.Nifti1Header
    hdr = hdr_cls.from_fileobj(io.BytesIO(raw))
    return hdr, tuple(int(s) for s in hdr.get_data_shape()), np.dtype(hdr.get_data_dtype()), int(hdr.get_data_offset())


def _nifti_header(path: Path):
    """``_parse_nifti_header`` of a file; None when unreadable (probe_image has already refused such files with a
    message)."""
    try:
        with _opener(path)(path, "rb") as f:
            return _parse_nifti_header(f.read(540))
    except Exception:  # noqa: BLE001 - nibabel raises many types for a broken header
        return None


def _decoded_as_float32(shape, dtype) -> bool:
    """A 3-D float64 NIfTI is decoded straight to float32 (``_read_float64_nifti_as_float32``); the memory budget
    counts it at 4 bytes per voxel."""
    return dtype.kind == "f" and dtype.itemsize == 8 and len(shape) == 3


def _read_float64_nifti_as_float32(path: Path, header) -> sitk.Image:
    """A float64 NIfTI decoded chunk by chunk straight into float32 (never a float64 copy of the volume): peak
    memory is the float32 array and the image made from it, 8 bytes per voxel instead of ITK's 8 + 4 + 4.
    Geometry (qform/sform choice, LPS) comes from ITK's own header reading; scl_slope/scl_inter are applied as
    ITK applies them. ``header``: the file's ``_nifti_header``."""
    hdr, shape, dtype, offset = header
    info = sitk.ImageFileReader()
    info.SetFileName(str(path))
    info.ReadImageInformation()
    slope, inter = hdr.get_slope_inter()
    n = int(np.prod(shape, dtype=np.int64))
    out = np.empty(n, np.float32)
    per = _CHUNK // dtype.itemsize
    with _opener(path)(path, "rb") as f:
        _read_exact(f, offset)
        for start in range(0, n, per):
            k = min(per, n - start)
            vals = np.frombuffer(_read_exact(f, k * dtype.itemsize), dtype=dtype)
            if slope is not None and (slope != 1.0 or (inter or 0.0) != 0.0):
                vals = vals * slope + (inter or 0.0)
            out[start:start + k] = vals
    img = sitk.GetImageFromArray(out.reshape(shape[::-1]))  # NIfTI stores x fastest: (z, y, x) in C order
    del out
    img.SetOrigin(info.GetOrigin())
    img.SetSpacing(info.GetSpacing())
    img.SetDirection(info.GetDirection())
    return img


def probe_image(path: str | Path, what: str = "image", name: str | None = None, single_file: bool = False) -> tuple:
    """Checks a file's header (and, for NIfTI, its data stream) without allocating its voxels.

    Returns the image size. Raises InputError for empty/corrupt/truncated files, sizes over the voxel limit,
    data longer than declared, NaN/Inf NIfTI voxels and (``single_file``) detached-data headers."""
    path = Path(path)
    name = name or path.name
    if path.stat().st_size == 0:
        raise InputError(f"{what}: file is empty: {name}")
    low = path.name.lower()
    if single_file and image_suffix(low) is None:
        raise InputError(f"{what}: {name}: unsupported file type; send a single-file volume ({', '.join(UPLOAD_SUFFIXES)})")
    if low.endswith((".nii", ".nii.gz")):
        return _scan_nifti(path, what, name)
    if single_file:
        _refuse_detached(path, what, name)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{what}: cannot read {name} as a medical image (corrupt or unsupported format)") from exc
    size = tuple(int(s) for s in reader.GetSize())
    _check_size(size, int(reader.GetNumberOfComponents()), what, name)
    _check_memory(size, _pixel_bytes(reader.GetPixelIDValue(), reader.GetNumberOfComponents()), what, name)
    return size


def _check_memory(shape, bytes_per_voxel: int, what: str, name: str) -> None:
    n = int(np.prod([max(int(s), 1) for s in shape], dtype=np.int64))
    need = n * (int(bytes_per_voxel) + WORK_BYTES_PER_VOXEL)
    if need > MEMORY_BUDGET_MB * 2**20:
        raise InputError(
            f"{what}: {name}: a {tuple(int(s) for s in shape)} volume of {bytes_per_voxel}-byte voxels needs about "
            f"{need / 2**30:.1f} GB to process, over the memory budget of {MEMORY_BUDGET_MB / 1024:.1f} GB "
            "(JMMDA_MEMORY_BUDGET_MB); crop, resample or store it with a smaller voxel type"
        )


def _pixel_bytes(pixel_id: int, components: int) -> int:
    """Bytes per voxel of a SimpleITK pixel type (e.g. "64-bit float" -> 8), times its components."""
    import re

    m = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(pixel_id))
    return (int(m.group(1)) // 8 if m else 8) * max(int(components), 1)


def _check_size(shape, components: int, what: str, name: str) -> None:
    n = int(np.prod([max(int(s), 1) for s in shape], dtype=np.int64)) * max(components, 1)
    if any(int(s) < 0 for s in shape) or n > MAX_VOXELS:
        raise InputError(
            f"{what}: {name} declares a volume of {tuple(int(s) for s in shape)} = {n} voxels, which exceeds the limit of "
            f"{MAX_VOXELS} (JMMDA_MAX_VOXELS); crop or resample it"
        )


#: longest NRRD / MetaImage text header accepted from untrusted sources (the whole header is parsed, not a prefix)
MAX_HEADER_BYTES = 1 << 20


def _header_lines(f, what: str, name: str):
    """Yields the text lines of a header from ``f`` (the whole header, however it is padded), refusing one longer
    than MAX_HEADER_BYTES."""
    used = 0
    while True:
        line = f.readline(MAX_HEADER_BYTES + 1)
        used += len(line)
        if used > MAX_HEADER_BYTES:
            raise InputError(f"{what}: {name}: image header longer than {MAX_HEADER_BYTES // 1024} KiB; refused")
        if not line:
            return
        yield line


def _refuse_detached(path: Path, what: str, name: str) -> None:
    """Parses the whole NRRD / MetaImage header and refuses any that does not hold its voxels in the same file.

    NRRD (recognised by its magic, whatever the file is called, as ITK does): every field up to the blank line
    that ends the header is read; a ``data file`` field (any spelling: ``datafile``, ``data_file``) is refused,
    and so is a header that never reaches its blank line (header-only file). MetaImage (.mha): every ``key =
    value`` line up to ``ElementDataFile``, which must be ``LOCAL``; a header without it is refused. Comment
    padding cannot push a field out of view: the only bound is MAX_HEADER_BYTES for the whole header."""
    refuse = f"{what}: {name}: the header points at a separate data file; send a single-file volume"
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        if magic == b"NRRD":
            lines = _header_lines(f, what, name)
            next(lines)  # NRRD000N
            for line in lines:
                text = line.rstrip(b"\r\n")
                if not text.strip():
                    return  # attached data follows
                if text.startswith(b"#"):
                    continue  # comment
                head = text.partition(b":")[0]
                if text[len(head) : len(head) + 2] == b":=":
                    continue  # key/value pair (free text, not a field)
                field = head.strip().lower().replace(b" ", b"").replace(b"_", b"")
                if field == b"datafile":
                    raise InputError(refuse)
            raise InputError(f"{what}: {name}: NRRD header without attached data (no blank line ends it); "
                             "send a single-file volume")
        if path.name.lower().endswith(".nrrd"):
            raise InputError(f"{what}: {name}: not an NRRD file (no NRRD magic)")
        for line in _header_lines(f, what, name):
            key, sep, value = line.partition(b"=")
            if not sep:
                continue
            if key.strip().lower() == b"elementdatafile":
                if value.strip().upper() != b"LOCAL":
                    raise InputError(refuse)
                return
        raise InputError(f"{what}: {name}: MetaImage header without ElementDataFile = LOCAL; send a single-file volume")


def _scan_nifti(path: Path, what: str, name: str) -> tuple:
    try:
        with _opener(path)(path, "rb") as f:
            raw = f.read(540)
            if len(raw) < 348:
                raise InputError(f"{what}: {name} is truncated or corrupt (shorter than a NIfTI header)")
            try:
                _, shape, dtype, offset = _parse_nifti_header(raw)
            except Exception as exc:  # nibabel raises many types for a broken header
                raise InputError(f"{what}: cannot read {name} as a medical image (corrupt or unsupported NIfTI header)") from exc
            _check_size(shape, 1, what, name)
            # before a byte of voxel data is decompressed; float64 volumes are decoded straight to float32
            _check_memory(shape, 4 if _decoded_as_float32(shape, dtype) else dtype.itemsize, what, name)
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            pos = len(raw)
            if offset > pos:  # skip header extensions (bounded)
                if offset > (1 << 24):
                    raise InputError(f"{what}: {name}: implausible NIfTI data offset {offset}")
                skipped = _read_exact(f, offset - pos)
                if len(skipped) < offset - pos:
                    raise InputError(f"{what}: {name} is truncated (no voxel data)")
                buf = b""
            else:
                buf = raw[offset:]
            check_finite = dtype.kind in "fc"
            got, carry = 0, b""
            while got < expected:
                chunk = buf if buf else f.read(min(_CHUNK, expected - got))
                buf = b""
                if not chunk:
                    raise InputError(
                        f"{what}: {name} is truncated: {got} of {expected} bytes of voxel data "
                        f"({100.0 * got / max(expected, 1):.0f}%)"
                    )
                chunk = chunk[: expected - got] if got + len(chunk) > expected else chunk
                got += len(chunk)
                if check_finite:
                    data = carry + chunk
                    n = len(data) // dtype.itemsize * dtype.itemsize
                    if not np.all(np.isfinite(np.frombuffer(data[:n], dtype=dtype))):
                        raise InputError(f"{what}: {name} contains NaN or infinite voxel values")
                    carry = data[n:]
            # reading on to the end also checks the gzip CRC; stop at a bound (decompression bombs)
            if len(f.read(MAX_TRAILING_BYTES + 1)) > MAX_TRAILING_BYTES:
                raise InputError(f"{what}: {name} holds more data than its header declares (corrupt, or a decompression bomb)")
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{what}: {name} is truncated or corrupt ({exc})") from exc
    return shape


def _read_exact(f, n: int) -> bytes:
    parts = []
    while n > 0:
        b = f.read(min(n, _CHUNK))
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)



def check_volume(img: sitk.Image, what: str = "image") -> None:
    if img.GetDimension() != 3 or min(img.GetSize()) < 2:
        raise InputError(f"{what}: a 3-D volume is required, got size {img.GetSize()}")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what}: a scalar (single-component) volume is required, got {img.GetNumberOfComponentsPerPixel()} components")
    n = int(np.prod(img.GetSize(), dtype=np.int64))
    if n > MAX_VOXELS:
        raise InputError(f"{what}: volume of {img.GetSize()} = {n} voxels exceeds the limit of {MAX_VOXELS} voxels; crop or resample it")
    sp = np.array(img.GetSpacing())
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"{what}: invalid voxel spacing {tuple(sp)}")


def check_ct(ct: sitk.Image) -> None:
    """Checks that the volume looks like a head CT in HU, without copying its voxels (large inputs stay cheap)."""
    a = sitk.GetArrayViewFromImage(ct)
    if a.dtype.kind in "fc" and not all(np.all(np.isfinite(s)) for s in a):
        raise InputError("CT: contains NaN or infinite values")
    step = max(1, round((a.size / 4e6) ** (1 / 3)))  # percentiles from <= ~4 M voxels
    p1, p999 = np.percentile(a[::step, ::step, ::step].astype(np.float32), [1, 99.9])
    if p1 > -400 or p999 < 150 or float(a.max()) > 40000:
        raise InputError(
            f"CT: intensities do not look like a CT in Hounsfield units (1st percentile {p1:.0f}, 99.9th {p999:.0f}); "
            "expected air near -1000 HU and bone above 300 HU. Is this an MR image or a CT without rescale slope/intercept?"
        )
    return a


def check_mask(mask: sitk.Image, ref: sitk.Image, what: str = "brain mask", min_ml: float = 50.0) -> np.ndarray:
    """Returns the mask array (z, y, x) as uint8 {0,1} after checking geometry and content."""
    if not same_geometry(mask, ref):
        raise InputError(
            f"{what}: geometry does not match the CT (mask size {mask.GetSize()} spacing {tuple(round(s, 4) for s in mask.GetSpacing())} "
            f"origin {tuple(round(o, 2) for o in mask.GetOrigin())}; CT size {ref.GetSize()} spacing "
            f"{tuple(round(s, 4) for s in ref.GetSpacing())} origin {tuple(round(o, 2) for o in ref.GetOrigin())}). "
            "Resample the mask onto the CT grid."
        )
    m = sitk.GetArrayFromImage(mask)
    if not np.all(np.isfinite(m)):
        raise InputError(f"{what}: contains NaN or infinite values")
    m = (m > 0.5).astype(np.uint8)
    ml = float(m.sum()) * float(np.prod(mask.GetSpacing())) / 1000.0
    if ml == 0:
        raise InputError(f"{what}: mask is empty")
    if ml < min_ml:
        raise InputError(f"{what}: mask covers only {ml:.1f} mL (< {min_ml:.0f} mL); it cannot be a brain mask")
    return m


PROBABILITY_NOTE = "SYNTHETIC infarct probability (AI, phantom-calibrated) - not for diagnosis"


def label_synthetic(img: sitk.Image, note: str = SYNTHETIC_NOTE) -> sitk.Image:
    """Stamps the synthetic-image note into the metadata (NIfTI 'descrip', NRRD/MetaImage notes)."""
    img.SetMetaData("descrip", note[:79])
    img.SetMetaData("ITK_FileNotes", note[:79])
    return img


def write_image(img: sitk.Image, path: str | Path) -> Path:
    """Atomic write: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".nii.gz"
    tmp = path.with_name(f".{path.name.split('.')[0]}.{os.getpid()}.tmp{suffix}")
    sitk.WriteImage(img, str(tmp), useCompression=True)
    os.replace(tmp, path)
    return path
