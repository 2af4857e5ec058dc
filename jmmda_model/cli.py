"""``jmmda`` command line (``jmmda <command> --help`` for each):

    train             train a generator on a datastore folder (resumable; lesion-aware recipe by default;
                      --nproc-per-node N: DistributedDataParallel under torchrun)
    evaluate          metrics, lesion table and figure on cases with a real DWI
    infer             synthesise a DWI for one CT (NIfTI/NRRD/MHA file or DICOM folder; --series-uid)
    make-sample-data  write phantom cases (MNI152 anatomy) in datastore layout
    import            import APIS or ISLES'24 into a datastore folder (--register: MR->CT once per case)
    export-dicom      synthetic DWI -> DICOM MR series in the CT's study (burned-in SYNTHETIC; --stow to a PACS)
    export-torchscript  checkpoint -> TorchScript file (checked against the model; jmmda infer / the server run it)
    export-bundle     checkpoint -> MONAI Bundle folder (configs, models/model.pt + model.ts, docs, LICENSE)
    publish           a model trained elsewhere (.pt, .ts, bundle .zip) -> a CANDIDATE version on a running server
                      (checked here, compared there with the served version; served only when an admin promotes it)

Exit codes: 0 success, 1 a distributed training worker failed (the last checkpoint stays valid; rerun to resume),
2 refused input or arguments (the message names the file), 3 PACS/DICOMweb failure.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .checkpoint import CheckpointError
from .errors import InputError, PacsError
from .inference import DeviceError


def _split(cases, val_ids, n_val):
    if val_ids:
        want = set(val_ids.split(","))
        return [c for c in cases if c.id not in want], [c for c in cases if c.id in want]
    if n_val <= 0:
        return cases, []
    return cases[:-n_val], cases[-n_val:]


def cmd_train(a):
    from .data import find_cases
    from .distributed import DistributedError, check_layout, launch
    from .networks import GeneratorConfig
    from .trainer import TrainConfig, Trainer

    check_layout(a.batch_size, a.nproc_per_node, a.nnodes, a.node_rank, a.master_addr)  # before anything starts
    cases = find_cases(a.data)
    if not cases:
        raise InputError(f"no complete cases (CT + labels/dwi + labels/brainmask) in {a.data}")
    train, val = _split(cases, a.val_ids, a.n_val)
    from .preprocess import PreprocessConfig

    new = a.recipe == "lesion"
    g = GeneratorConfig(
        arch=a.arch, base_channels=a.base_channels, depth=a.depth, heads=a.heads, wavelet=a.wavelet,
        use_mask=not a.no_mask, use_dwt=not a.no_dwt, use_adaptive_fusion=not a.no_adaptive_fusion,
        fusion_scale=a.fusion_scale, aux_lesion=a.aux_lesion, residual_prior=new,
        residual_bound=a.residual_bound,  # refused with the legacy recipe (it has no render head), not dropped
    )
    if a.mirror_noise_ref_hu is not None and not new:
        raise InputError("--mirror-noise-ref-hu scales the hemispheric difference: the legacy recipe has none")
    pre = PreprocessConfig(context_slices=a.context_slices, mirror_channels=new, mirror_noise_ref_hu=a.mirror_noise_ref_hu,
                           slab_mm=a.slab_mm)
    patch = (a.patch_size or None) if new else None
    cfg = TrainConfig(generator=g.to_dict(), preprocess=pre.to_dict(), epochs=a.epochs, batch_size=a.batch_size,
                      lr_g=a.lr, lr_d=a.lr, lr_schedule=a.lr_schedule, lr_final_ratio=a.lr_final_ratio, seed=a.seed,
                      device=a.device, max_steps_per_epoch=a.max_steps_per_epoch,
                      max_steps=a.max_steps, lesion_oversample=a.lesion_oversample, lambda_contrast=a.lambda_contrast,
                      select_metric=a.select, progress=not a.no_progress, patch_size=patch,
                      hard_negative_fraction=a.hard_negative_fraction, noise_augment_hu=a.noise_augment_hu,
                      noise_augment_probability=a.noise_augment_probability, unseen_lesion_hu=a.unseen_lesion_hu)
    if a.nproc_per_node * a.nnodes > 1:  # DDP under torchrun: the same Trainer in N processes (see distributed.py)
        from dataclasses import asdict

        try:
            summary = launch(asdict(cfg), train, val, a.out, a.nproc_per_node, resume=not a.no_resume, nnodes=a.nnodes,
                             node_rank=a.node_rank, master_addr=a.master_addr, master_port=a.master_port)
        except DistributedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        summary = Trainer(cfg, a.out).fit(train, val, resume=not a.no_resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1))
    return 0


def cmd_evaluate(a):
    from .data import find_cases
    from .report import evaluate_cases

    cases = find_cases(a.data)
    if a.ids:
        want = set(a.ids.split(","))
        cases = [c for c in cases if c.id in want]
    if not cases:
        raise InputError(f"no complete cases to evaluate in {a.data}")
    res = evaluate_cases(a.model, cases, a.out, device=a.device)
    print(res["table_markdown"])
    print(res["sensitivity_markdown"])
    if res.get("probability"):
        pr = res["probability"]
        print(f"infarct probability: ECE {pr['ece']:.4f}; lesion-wise sensitivity at <= 2 FP clusters/case "
              f"{pr['sensitivity_at_2fp']['sensitivity']:.2f} (reliability.png, froc.png)")
    print(f"report: {res['report']}\nfigure: {', '.join(res['figures'])}")
    return 0


def cmd_infer(a):
    from .clinical.imageio import read_image, write_image
    from .inference import Synthesizer

    dst = Path(a.out)  # arguments first: no inference before a refusal
    if "synthetic" not in dst.name.lower():
        raise InputError("output file name must contain 'synthetic' (every synthetic image is labelled as such)")
    if not dst.parent.is_dir():
        raise InputError(f"output folder does not exist: {dst.parent}")
    if a.save_probability and "synthetic" not in Path(a.save_probability).name.lower():
        raise InputError("--save-probability: the file name must contain 'synthetic' (every synthetic image is "
                         "labelled as such)")
    if a.save_probability and not Path(a.save_probability).parent.is_dir():
        raise InputError(f"--save-probability: output folder does not exist: {Path(a.save_probability).parent}")
    syn = Synthesizer(a.model, device=a.device, flip_average=a.flip_average)
    ct = read_image(a.ct, "CT", series_uid=a.series_uid)
    mask = read_image(a.mask, "brain mask") if a.mask else None
    if a.save_probability and not syn.has_probability:
        raise InputError(f"--save-probability: the model {Path(a.model).name} has no lesion-probability head "
                         "(trained with --recipe legacy, or a TorchScript export made before release 0.2.1: export it again)")
    out, m, info, *prob = syn(ct, mask, return_probability=bool(a.save_probability))  # prob: [image] when asked
    del ct, mask  # thin-slice series: the inputs go before the outputs are compressed and written
    write_image(out, dst)
    del out
    if a.save_mask:
        write_image(m, a.save_mask)
    if a.save_probability:
        write_image(prob[0], a.save_probability)
    print(json.dumps(info, indent=1))
    return 0


def cmd_make_sample_data(a):
    from .phantom import PhantomConfig, write_datastore

    if min(a.spacing) <= 0 or max(a.spacing) > 10:
        raise InputError(f"--spacing must be three values in (0, 10] mm, got {a.spacing}")
    ids = write_datastore(a.out, a.n, first_seed=a.seed, cfg=PhantomConfig(max_lesions=a.max_lesions, spacing=tuple(a.spacing)))
    print(f"wrote {len(ids)} phantom cases to {a.out}")
    return 0


def cmd_import(a):
    from .clinical.importers import import_dataset

    rep = import_dataset(a.format, a.src, a.studies, register=a.register, overwrite=a.overwrite)
    print(rep.summary())
    return 0 if rep.imported else 2


def _stow_attempts(text: str) -> int:
    from .clinical.dicom import check_stow_attempts

    try:
        n = int(text)
    except ValueError:
        n = text  # not a whole number: refused below, named as typed
    try:
        return check_stow_attempts(n)
    except ValueError as exc:  # argparse shows this message, exit 2
        raise argparse.ArgumentTypeError(str(exc)) from exc


def cmd_export_dicom(a):
    from .clinical.dicom import export_synthetic_dwi, stow
    from .clinical.imageio import read_image

    syn = read_image(a.synthetic, "synthetic DWI")
    prob = read_image(a.probability, "probability map") if a.probability else None  # read before writing anything
    paths = export_synthetic_dwi(syn, a.ct_dicom, a.out, checkpoint=a.checkpoint, series_uid=a.series_uid,
                                 burn_in=not a.no_burn_in)
    print(f"wrote {len(paths)} SYNTHETIC DWI instances to {a.out}")
    if prob is not None:
        from .clinical.dicom import export_probability_map

        pm = export_probability_map(prob, a.ct_dicom, a.out, checkpoint=a.checkpoint, series_uid=a.series_uid)
        paths.append(pm)
        print(f"wrote the infarct-probability Parametric Map {pm}")
    if a.stow:
        n = stow(paths, a.stow, a.user, a.password, attempts=a.stow_attempts)
        print(f"stored {n} instances at {a.stow}")
    return 0


def cmd_export_torchscript(a):
    from .export import export_torchscript

    dst = Path(a.out)
    if not dst.parent.is_dir():
        raise InputError(f"output folder does not exist: {dst.parent}")
    if dst.is_dir():
        raise InputError(f"--out {dst} is a folder; name the file to write, e.g. {dst / 'jmmda.ts'}")
    meta = export_torchscript(a.model, dst)
    gives = "synthesis and lesion logits (probability map)" if meta["outputs"] != ["dwi"] else "synthesis"
    print(f"wrote {dst} (traced generator: {gives}; max |TorchScript - model| {meta['agreement_max_abs_diff']:.2g} "
          "on test slices)")
    return 0


def cmd_export_bundle(a):
    from .bundle import export_bundle

    out = export_bundle(a.model, a.out, overwrite=a.overwrite)
    print(f"wrote MONAI Bundle {out}; run it with:\n  python -m monai.bundle run --config_file {out}/configs/inference.json "
          f"--meta_file {out}/configs/metadata.json --bundle_root {out} --image CT --mask MASK --output_dir OUT")
    return 0


def cmd_publish(a):
    """A model trained elsewhere -> a candidate version on a running server (POST /train/ct2dwi/versions): checked
    here first (same check as the server's), then uploaded; the server compares it with the served version."""
    import os
    import tempfile

    import requests

    from .export import checkpoint_from_model_file

    src = Path(a.model)
    if not src.is_file():
        raise InputError(f"model file not found: {src}")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint_from_model_file(src, Path(tmp) / "check.pt")
    token = a.token or os.environ.get("CT2DWI_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = a.server.rstrip("/") + "/train/ct2dwi/versions"
    try:
        with open(src, "rb") as f:
            r = requests.post(url, files={"model": (src.name, f)}, headers=headers, timeout=a.timeout)
    except requests.RequestException as exc:
        raise PacsError(f"cannot reach the server at {a.server}: {type(exc).__name__}") from exc
    if r.status_code != 200:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text[:300]
        raise InputError(f"the server refused {src.name} (HTTP {r.status_code}): {detail}")
    body = r.json()
    c = body.get("comparison") or {}
    print(f"published {src.name} ({body['format']}) as candidate version {body['version']}; it is NOT served until "
          "an admin promotes it")
    if c.get("candidate") and c.get("served"):
        for k in ("lesion_sensitivity", "lesions_darker", "false_bright_ml", "psnr_brain"):
            print(f"  {k}: candidate {c['candidate'].get(k)} | served v{c['served']['version']} {c['served'].get(k)}")
    if c.get("worse_on_lesions"):
        print("WARNING: worse on lesions than the served version: " + "; ".join(c["worse_on_lesions"]))
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="jmmda", description="JMMDA-GAN CT-to-DWI synthesis (research use; output is SYNTHETIC)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a generator on a datastore folder (CT + labels/dwi, labels/brainmask[, labels/lesion])")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True, help="run folder: checkpoints/last.pt (resume), model.pt (best), tensorboard/")
    t.add_argument("--arch", choices=["jmmda", "pix2pix"], default="jmmda")
    t.add_argument("--recipe", choices=["lesion", "legacy"], default="lesion",
                   help="lesion (default): mirror-difference channels, tissue prior + residual, lesion-probability "
                        "head (BCE + Dice, calibrated), lesion-centred patches; legacy: the earlier whole-slice GAN")
    t.add_argument("--patch-size", type=int, default=80, help="training crop size in pixels (lesion recipe; 0 = whole slices)")
    t.add_argument("--hard-negative-fraction", type=float, default=0.0,
                   help="lesion recipe: this fraction of the crops centred on normal brain >= 3 HU darker than its "
                        "mirror image, which the lesion head must learn to leave alone (default 0: none)")
    t.add_argument("--noise-augment-hu", type=float, default=0.0,
                   help="CT-noise augmentation: with probability --noise-augment-probability a crop's CT gets more "
                        "noise of the phantoms' texture, at a level drawn from 0 to this (phantom ct_noise_hu scale, "
                        "0-20; default 0: off)")
    t.add_argument("--noise-augment-probability", type=float, default=0.5)
    t.add_argument("--unseen-lesion-hu", type=float, default=0.0,
                   help="lesion recipe: lesions whose CT contrast (ring of normal brain minus lesion mean) is below "
                        "this many HU are left out of every loss but the adversarial one (0-20; default 0: off)")
    t.add_argument("--residual-bound", type=float, default=0.0,
                   help="lesion recipe: bound the render head's residual softly to +- this (normalised DWI, normal "
                        "brain 0.25), so brightness beyond it comes through the lesion probability (default 0: unbounded)")
    t.add_argument("--mirror-noise-ref-hu", type=float, default=None,
                   help="lesion recipe: scale the CT-minus-mirror channels to each case's own noise, this many HU as "
                        "the reference (0-50; default: not scaled); not with --noise-augment-hu")
    t.add_argument("--epochs", type=int, default=50)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="cosine: from --lr down to --lr x --lr-final-ratio at the last step (--max-steps, or all epochs)")
    t.add_argument("--lr-final-ratio", type=float, default=0.05)
    t.add_argument("--base-channels", type=int, default=32)
    t.add_argument("--depth", type=int, default=3)
    t.add_argument("--heads", type=int, default=4)
    t.add_argument("--wavelet", default="haar", help="any discrete PyWavelets wavelet (haar, db2, sym4, bior2.2, ...)")
    t.add_argument("--no-mask", action="store_true", help="ablation: no mask-guided fusion")
    t.add_argument("--no-dwt", action="store_true", help="ablation: strided conv instead of DWT")
    t.add_argument("--no-adaptive-fusion", action="store_true", help="ablation: no adaptive fusion weighting")
    t.add_argument("--n-val", type=int, default=1, help="last N cases are held out for validation")
    t.add_argument("--val-ids", default="", help="comma-separated case ids held out for validation")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--max-steps-per-epoch", type=int, default=None)
    t.add_argument("--max-steps", type=int, default=None, help="stop after exactly this many optimiser steps")
    t.add_argument("--context-slices", type=int, default=1, help="2.5-D input: adjacent slices on each side (0 = 2-D)")
    t.add_argument("--slab-mm", type=float, default=None,
                   help="slice thickness the model works at: training cases with thinner slices are averaged into "
                        "slabs of about this many mm, and so are such CTs at inference (default: the training "
                        "cases' median slice spacing, recorded in the model)")
    t.add_argument("--lesion-oversample", type=int, default=3, help="slices with lesion appear this many times per epoch")
    t.add_argument("--lambda-contrast", type=float, default=10.0, help="weight of the lesion-contrast loss (0 = off)")
    t.add_argument("--aux-lesion", action="store_true", help="auxiliary lesion-probability head (training only)")
    t.add_argument("--fusion-scale", type=int, default=2, choices=[1, 2, 4], help="adaptive fusion weights at 1/N resolution")
    t.add_argument("--select", choices=["psnr_brain", "lesion"], default="lesion",
                   help="model.pt = best validation epoch by in-brain PSNR, or by lesion sensitivity then PSNR")
    t.add_argument("--nproc-per-node", type=int, default=1,
                   help="train in N DistributedDataParallel processes under torchrun (NCCL, one GPU each; gloo on CPU); "
                        "--batch-size is the global batch; pick GPUs with CUDA_VISIBLE_DEVICES")
    t.add_argument("--nnodes", type=int, default=1, help="machines taking part (run the same command on each; "
                   "--out on shared storage)")
    t.add_argument("--node-rank", type=int, default=0, help="this machine's index, 0 .. nnodes-1")
    t.add_argument("--master-addr", default=None, help="address of node 0 (with --nnodes > 1)")
    t.add_argument("--master-port", type=int, default=29500, help="rendezvous port on node 0")
    t.add_argument("--no-resume", action="store_true")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="metrics table + PNG figure on cases with real DWI")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--ids", default="")
    e.add_argument("--out", required=True)
    e.add_argument("--device", default="auto")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("infer", help="synthesise DWI for one CT (NIfTI/NRRD file or DICOM folder)")
    i.add_argument("--model", required=True)
    i.add_argument("--ct", required=True)
    i.add_argument("--mask", default=None, help="brain mask on the CT grid; computed from the CT when omitted")
    i.add_argument("--out", required=True, help="output file, name must contain 'synthetic'")
    i.add_argument("--save-mask", default=None)
    i.add_argument("--save-probability", default=None,
                   help="also write the calibrated infarct-probability map (NIfTI, 0..1, SYNTHETIC) to this file")
    i.add_argument("--series-uid", default=None, help="the CT series to use when the DICOM folder holds several")
    i.add_argument("--device", default="auto")
    i.add_argument("--flip-average", action="store_true",
                   help="synthesise each slice as the mean of the network's answers to it and to its left-right mirror "
                        "image: twice the network time, 0.2 dB closer to the true DWI on test phantoms, lesions a tie "
                        "(the answer's 'views' says which)")
    i.set_defaults(func=cmd_infer)

    m = sub.add_parser("make-sample-data", help="write phantom cases (MNI152 anatomy) in datastore layout")
    m.add_argument("--out", required=True)
    m.add_argument("-n", type=int, default=10)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--max-lesions", type=int, default=3)
    m.add_argument("--spacing", type=float, nargs=3, default=[1.8, 1.8, 5.0], metavar=("X", "Y", "Z"),
                   help="voxel spacing in mm (the field of view stays 230 x 256 x 160 mm)")
    m.set_defaults(func=cmd_make_sample_data)
    im = sub.add_parser("import", help="import APIS or ISLES'24 data into a datastore folder")
    im.add_argument("--format", choices=["apis", "isles24"], required=True)
    im.add_argument("--src", required=True)
    im.add_argument("--studies", required=True)
    im.add_argument("--register", action="store_true", help="rigidly register DWI/ADC to CT when not on its grid")
    im.add_argument("--overwrite", action="store_true")
    im.set_defaults(func=cmd_import)

    ex = sub.add_parser("export-dicom", help="synthetic DWI -> DICOM MR series referencing the source CT series")
    ex.add_argument("--synthetic", required=True, help="synthetic DWI file on the CT grid")
    ex.add_argument("--ct-dicom", required=True, help="folder with the source CT DICOM series")
    ex.add_argument("--out", required=True)
    ex.add_argument("--checkpoint", default="")
    ex.add_argument("--probability", default=None,
                    help="also write this infarct-probability map (jmmda infer --save-probability) as a DICOM Parametric Map")
    ex.add_argument("--stow", default=None, help="DICOMweb root for STOW-RS, e.g. http://pacs:8042/dicom-web")
    ex.add_argument("--stow-attempts", type=_stow_attempts, default=5, metavar="N",
                    help="tries of each DICOMweb request when the PACS cannot be reached, times out or is busy "
                         "(408/429/503/504), 2, 4, 8 ... s apart (default 5: 30 s before a PACS that is down is "
                         "reported; 1 = no retry)")
    ex.add_argument("--series-uid", default=None, help="the CT series to use when the folder holds several")
    ex.add_argument("--no-burn-in", action="store_true", help="do not burn 'SYNTHETIC - NOT FOR DIAGNOSIS' into the pixels")
    ex.add_argument("--user", default=None)
    ex.add_argument("--password", default=None, help="prefer the JMMDA_DICOMWEB_PASSWORD environment variable or ~/.netrc")
    ex.set_defaults(func=cmd_export_dicom)

    ts = sub.add_parser("export-torchscript", help="checkpoint -> TorchScript file, checked against the model")
    ts.add_argument("--model", required=True, help="JMMDA-GAN checkpoint (model.pt)")
    ts.add_argument("--out", required=True, help="output file, e.g. jmmda.ts")
    ts.set_defaults(func=cmd_export_torchscript)

    eb = sub.add_parser("export-bundle", help="checkpoint -> MONAI Bundle folder")
    eb.add_argument("--model", required=True, help="JMMDA-GAN checkpoint (model.pt)")
    eb.add_argument("--out", required=True, help="bundle folder to create")
    eb.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    eb.set_defaults(func=cmd_export_bundle)

    pb = sub.add_parser("publish", help="add a model trained elsewhere to a running server as a CANDIDATE version")
    pb.add_argument("--server", required=True, help="the server's address, e.g. http://127.0.0.1:8000")
    pb.add_argument("--model", required=True, help="JMMDA-GAN checkpoint (.pt), TorchScript export (.ts) or bundle (.zip)")
    pb.add_argument("--token", default=None, help="bearer token (default $CT2DWI_TOKEN); an admin's. Write --token=T when T starts with -")
    pb.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the check and comparison")
    pb.set_defaults(func=cmd_publish)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not a.verbose:
        for noisy in ("dicomweb_client", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return a.func(a)
    except (InputError, ValueError, CheckpointError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PacsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
