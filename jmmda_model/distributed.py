"""Multi-process training with PyTorch DistributedDataParallel, launched by ``torchrun``.

``launch(spec, nproc, run_dir)`` writes the job (training config, train/validation cases, resume / fine-tune
choice) to ``<run_dir>/launch.json`` and runs::

    python -m torch.distributed.run --standalone --nproc-per-node N -m jmmda_model.distributed <run_dir>/launch.json

Each worker joins the process group (NCCL on GPUs, one GPU per process; gloo on CPUs) and runs the same
``Trainer.fit`` as a single process. How the result stays equal to one process with the same global batch:

* the epoch order (lesion oversampling, shuffle seeded by seed and epoch) is built identically on every rank and
  a ``DistributedSampler`` deals it out: at every step the ranks' batches together are the single-process batch;
  augmentation is seeded per item and epoch, so it does not depend on which rank draws the item;
* generator and discriminator are both wrapped in DDP (gradients averaged over ranks); the losses that are ratios
  over the batch (brain-weighted L1, lesion contrast) divide by the denominator summed over all ranks;
* no batch norm anywhere (GroupNorm in JMMDA, InstanceNorm in pix2pix and the PatchGAN): normalisation is per
  sample, so splitting a batch over processes does not change it and no SyncBatchNorm is needed;
* rank 0 alone validates and writes checkpoints (atomically), model.pt, status.json, samples and TensorBoard;
  every rank resumes from the same ``checkpoints/last.pt``.

A worker that dies ends the run (torchrun stops the others); the last checkpoint stays valid and the same
command resumes from it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import write_json_atomic
from .errors import InputError

SPEC_NAME = "launch.json"
SUMMARY_NAME = "summary.json"


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def global_sum(t: torch.Tensor) -> torch.Tensor:
    """The detached sum of ``t`` over all ranks (``t`` itself, detached, in a single process)."""
    t = t.detach()
    if rank_and_world()[1] > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def global_mean(values: list[float], device) -> list[float]:
    """Means of scalars over ranks (for logging the losses of the whole global batch)."""
    if rank_and_world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def _case_to_dict(c) -> dict:
    return {k: (None if v is None else str(v)) for k, v in vars(c).items()}


def check_layout(batch_size: int, nproc: int, nnodes: int = 1, node_rank: int = 0, master_addr: str | None = None) -> None:
    """InputError unless the process layout is possible and the global batch divides over its processes."""
    if nproc < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise InputError(f"invalid process layout: --nproc-per-node {nproc} and --nnodes {nnodes} must be at least 1, "
                         f"--node-rank {node_rank} from 0 to nnodes-1")
    if nnodes > 1 and not master_addr:
        raise InputError("--master-addr (node 0's address) is needed with --nnodes > 1")
    if batch_size % (nproc * nnodes):
        raise InputError(f"the global batch size {batch_size} (--batch-size) must be a multiple of --nproc-per-node {nproc}"
                         + (f" x --nnodes {nnodes}" if nnodes > 1 else ""))


def launch(train_config: dict, train_cases, val_cases, run_dir: str | Path, nproc: int, resume: bool = True,
           init_from: str | Path | None = None, gpus: list[int] | None = None, timeout: float | None = None,
           nnodes: int = 1, node_rank: int = 0, master_addr: str | None = None, master_port: int = 29500) -> dict:
    """Runs ``Trainer.fit`` in ``nproc`` DDP processes under torchrun; returns rank 0's summary.

    ``gpus``: the CUDA devices to use (CUDA_VISIBLE_DEVICES), None = all visible. Several machines: the same call
    on each with ``nnodes``, its ``node_rank`` and node 0's ``master_addr``/``master_port`` (the run folder on
    shared storage: every rank resumes from rank 0's checkpoint). Raises ``DistributedError`` when a worker
    fails; the run folder then holds the last completed epoch's checkpoint."""
    check_layout(int(train_config["batch_size"]), nproc, nnodes, node_rank, master_addr)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "train_config": train_config,
        "train": [_case_to_dict(c) for c in train_cases],
        "val": [_case_to_dict(c) for c in val_cases],
        "resume": bool(resume),
        "init_from": None if init_from is None else str(init_from),
        "nproc": nproc,
    }
    write_json_atomic(spec, run_dir / SPEC_NAME)
    summary = run_dir / SUMMARY_NAME
    summary.unlink(missing_ok=True)
    env = dict(os.environ)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.setdefault("PYTHONFAULTHANDLER", "1")  # a worker killed by a signal (e.g. SIGABRT) prints its Python stack
    layout = ["--standalone"] if nnodes == 1 else [
        f"--nnodes={nnodes}", f"--node-rank={node_rank}", f"--master-addr={master_addr}", f"--master-port={master_port}"]
    # torchrun's per-attempt folders (a failed worker's error file) go to the run folder, not to TMPDIR
    cmd = [sys.executable, "-m", "torch.distributed.run", *layout, f"--nproc-per-node={nproc}",
           f"--log-dir={run_dir / 'torchrun'}", "-m", "jmmda_model.distributed", str(run_dir / SPEC_NAME)]
    rc = subprocess.run(cmd, env=env, timeout=timeout).returncode
    if rc == 0 and node_rank > 0:  # rank 0 (on node 0) writes the summary
        return {"state": "finished", "node_rank": node_rank, "world_size": nproc * nnodes}
    if rc != 0 or not summary.exists():
        _mark_failed(run_dir / "status.json", rc)
        raise DistributedError(
            f"distributed training failed (torchrun exit code {rc}); the last completed epoch is kept in "
            f"{run_dir / 'checkpoints' / 'last.pt'} and the same command resumes from it"
        )
    return json.loads(summary.read_text())


class DistributedError(RuntimeError):
    pass


def _mark_failed(status: Path, rc: int) -> None:
    """A run whose workers were killed leaves status.json saying "running": say that it failed."""
    try:
        st = json.loads(status.read_text()) if status.exists() else {}
    except (OSError, json.JSONDecodeError):
        st = {}
    st.update({"state": "failed", "error": f"a training process failed (torchrun exit code {rc}); the last completed "
                                           "epoch's checkpoint is kept and a resumed run continues from it"})
    write_json_atomic(st, status)


def worker(spec_path: str | Path) -> int:
    """One torchrun worker: joins the group, trains, and (rank 0) writes the summary."""
    from .data import Case
    from .trainer import TrainConfig, Trainer

    spec_path = Path(spec_path)
    spec = json.loads(spec_path.read_text())
    cfg = TrainConfig.from_dict(spec["train_config"])
    use_cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    import logging

    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s rank {dist.get_rank()} %(name)s: %(message)s")
    try:
        def cases(key):
            return [Case(**{k: (None if v is None else (v if k == "id" else Path(v))) for k, v in d.items()}) for d in spec[key]]

        summary = Trainer(cfg, spec_path.parent).fit(cases("train"), cases("val"), resume=spec["resume"],
                                                     init_from=spec["init_from"])
        if dist.get_rank() == 0:
            summary["world_size"] = dist.get_world_size()
            write_json_atomic(summary, spec_path.parent / SUMMARY_NAME)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


def exit_now(code: int) -> None:
    """Ends a worker whose work is done and written (the summary and checkpoints are written atomically, the process
    group destroyed) without the interpreter's teardown. Under load a gloo worker sometimes aborted in that teardown
    ("terminate called without an active exception", SIGABRT, no Python frame on the stack: seen 3 times in full test
    suites and once in 174 repeated runs of tests/ddp_grad_probe.py, under load), which torchrun
    reports as a failed run although every result was already written."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_now(worker(sys.argv[1]))
