"""One training step's gradients under torchrun, in float64 (used by tests/test_distributed.py).

    python -m torch.distributed.run --standalone --nproc-per-node N tests/ddp_grad_probe.py OUT.pt [MUTATION]

Every process builds the same Trainer (seeded) and the same global batch; rank r takes its share of the batch
and runs ``Trainer._step`` once. The gradients each optimiser is about to apply are recorded at its ``step``
call (before Adam touches them) and rank 0 saves them. With 1 process the same script gives the single-process
gradients of the whole batch.

MUTATION (to show the comparison can fail): ``no_allreduce`` runs the step inside the DDP wrappers' ``no_sync()``
(DDP's own switch: the same wrappers, forward and backward as always, no gradient all-reduce); ``local_denominators``
makes the batch-ratio losses divide by the local rank's denominators instead of the global ones.
"""
import contextlib
import os
import sys

import torch
import torch.distributed as dist

torch.set_default_dtype(torch.float64)  # before any module is built: rounding stays ~1e-16, far below any wiring error


def global_batch(trainer, n=4, size=32, seed=1234):
    g = torch.Generator().manual_seed(seed)
    c_in = trainer.input_channels
    x = torch.rand(n, c_in, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    brain = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size * 0.4) ** 2).to(torch.float64)
    brain = brain.expand(n, 1, size, size).clone()
    lesion = torch.zeros(n, 1, size, size)
    for i, (cy, cx) in {0: (12, 12), 1: (20, 14), 3: (15, 21)}.items():  # rank 1's half holds one lesion slice
        lesion[i, 0, cy - 3 : cy + 3, cx - 3 : cx + 3] = 1.0
    x[:, trainer.mask_channel] = brain[:, 0]
    y = torch.rand(n, 1, size, size, generator=g) * 0.3 + 0.5 * lesion
    return {"input": x, "target": y, "brain": brain, "lesion": lesion}


def main(out, mutation=None):
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    from jmmda_model import trainer as trainer_mod
    from jmmda_model.trainer import TrainConfig, Trainer

    cfg = TrainConfig(generator={"base_channels": 8, "depth": 2, "heads": 2, "aux_lesion": True}, device="cpu", amp=False,
                      tensorboard=False, progress=False, disc_channels=8, seed=3)
    t = Trainer(cfg, os.path.dirname(out) or ".")
    rank, world = t.rank, t.world
    sync = contextlib.nullcontext()
    if mutation == "no_allreduce":
        # DDP's supported switch, not a swap of modules: a rank aborted twice under heavy load ("terminate called
        # without an active exception") when the step ran on the plain modules beside DDP wrappers that never ran
        sync = contextlib.ExitStack()
        for wrapper in (t.G_train, t.D_train):
            sync.enter_context(wrapper.no_sync())
    elif mutation == "local_denominators":
        trainer_mod.global_sum = lambda v: v.detach()
    elif mutation:
        raise SystemExit(f"unknown mutation {mutation}")
    batch = global_batch(t)
    share = batch["input"].shape[0] // world
    local = {k: v[rank * share : (rank + 1) * share] for k, v in batch.items()}
    grads = {}

    def record(name, module, opt):
        step = opt.step

        def wrapped(*a, **k):
            grads[name] = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                           for n, p in module.named_parameters()}
            return step(*a, **k)
        opt.step = wrapped

    record("D", t.D, t.opt_d)
    record("G", t.G, t.opt_g)
    with sync:
        losses = t._step(local)
    if rank == 0:
        torch.save({"grads": grads, "losses": losses, "world": world}, out)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
    if "RANK" in os.environ:  # as the training workers end (jmmda_model.distributed.exit_now): no interpreter teardown
        from jmmda_model.distributed import exit_now

        exit_now(0)
