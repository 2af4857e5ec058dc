"""DistributedDataParallel training under torchrun, on CPU with the gloo backend and 2 processes."""
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest
import torch

from jmmda_model import checkpoint as ckpt_io
from server_utils import free_port
from jmmda_model.data import find_cases
from jmmda_model.distributed import DistributedError, launch
from jmmda_model.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.slow
TINY = ["--base-channels", "8", "--depth", "2", "--heads", "2"]


def _jmmda(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "jmmda_model.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(small_store, tmp_path):
    """1 process vs 2 gloo processes (stopped after epoch 1 and resumed) vs 2 "nodes" of 1 process on loopback."""
    common = ["train", "--data", str(small_store), "--n-val", "0", "--max-steps-per-epoch", "3", "--batch-size", "4",
              "--no-progress", *TINY]
    one = _jmmda(*common, "--epochs", "2", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    for epochs in ("1", "2"):  # the DDP run is interrupted after epoch 1 and resumed
        two = _jmmda(*common, "--epochs", epochs, "--out", str(tmp_path / "two"), "--nproc-per-node", "2")
        assert two.returncode == 0, two.stderr[-3000:]
        assert '"world_size": 2' in two.stdout
    assert "resumed from" in two.stderr
    port = str(free_port())
    nodes = [subprocess.Popen([sys.executable, "-m", "jmmda_model.cli", *common, "--epochs", "2", "--out",
                               str(tmp_path / "nodes"), "--nnodes", "2", "--node-rank", str(r), "--master-addr",
                               "127.0.0.1", "--master-port", port], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}) for r in (0, 1)]
    for p in nodes:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    a = ckpt_io.load(tmp_path / "one" / "checkpoints" / "last.pt")
    init = _initial(a, tmp_path)
    g0, d0, _, _ = _nets({**a, "generator": init["generator"], "discriminator": init["discriminator"]}, small_store)
    for arm in ("two", "nodes"):
        b = ckpt_io.load(tmp_path / arm / "checkpoints" / "last.pt")
        assert a["global_step"] == b["global_step"] == 6 and a["epoch"] == b["epoch"] == 2
        _compare(a, b, g0, d0, small_store)
    # rank 0 alone wrote: one model.pt, one status, no stray temp files
    assert (tmp_path / "two" / "model.pt").exists()
    assert not [p for p in (tmp_path / "two").rglob("*.tmp")]


def _compare(a, b, g0, d0, small_store):
    # Compared by what the networks compute: conv biases right before a per-channel norm (and the score bias
    # before the softmax) get a zero gradient in exact arithmetic, rounding noise in practice, which Adam turns
    # into +-lr steps; those weights differ between any two summation orders but cannot change an output.
    g1, d1, x, y = _nets(a, small_store)
    g2, d2, _, _ = _nets(b, small_store)
    with torch.no_grad():
        out1, out2, out0 = g1(x), g2(x), g0(x)
        assert float((out1 - out2).abs().max()) < 1e-4
        assert float((out1 - out0).abs().max()) > 0.05  # the runs did train: far above the tolerance
        l1, l2, l0 = d1(x, y), d2(x, y), d0(x, y)
        assert float((l1 - l2).abs().max()) < 1e-3 * float(l1.abs().max())
        assert float((l1 - l0).abs().max()) > 0.05 * float(l1.abs().max())
    # the logged losses are those of the whole global batch, so the histories agree too
    for ra, rb in zip(a["history"], b["history"]):
        assert ra["loss_l1"] == pytest.approx(rb["loss_l1"], rel=1e-3)
        assert ra["loss_contrast"] == pytest.approx(rb["loss_contrast"], rel=1e-3, abs=1e-6)


def _initial(ck, tmp_path):
    cfg = TrainConfig(generator=ck["train_config"]["generator"], preprocess=ck["preprocess"], progress=False, tensorboard=False)
    return Trainer(cfg, tmp_path / "init").state()


def _nets(ck, store):
    from jmmda_model.data import load_case, model_input
    from jmmda_model.networks import PatchDiscriminator, build_generator
    from jmmda_model.preprocess import PreprocessConfig, pad_to_multiple

    g = build_generator(ck["generator_config"])
    g.load_state_dict(ck["generator"])
    tc = ck["train_config"]
    d = PatchDiscriminator(ck["generator_config"]["ct_channels"] + 2,
                           tc["disc_channels"], tc["disc_layers"])
    d.load_state_dict(ck["discriminator"])
    pre = PreprocessConfig.from_dict(ck["preprocess"])
    c = load_case(find_cases(store)[0], pre)
    k = c.brain.shape[0] // 2
    x = pad_to_multiple(torch.from_numpy(model_input(c.ct_hu, c.brain, pre)[k - 2 : k + 2]), g.size_divisor)[0]
    y = pad_to_multiple(torch.from_numpy(c.dwi[k - 2 : k + 2, None]), g.size_divisor)[0]
    return g.eval(), d.eval(), x, y


def test_batch_not_divisible_by_processes_is_refused(small_store, tmp_path):
    r = _jmmda("train", "--data", str(small_store), "--out", str(tmp_path / "x"), "--batch-size", "3",
               "--nproc-per-node", "2", *TINY, timeout=60)
    assert r.returncode == 2 and "multiple of --nproc-per-node 2" in r.stderr
    for layout in (["--nproc-per-node", "0"], ["--nnodes", "2", "--node-rank", "2"]):
        r = _jmmda("train", "--data", str(small_store), "--out", str(tmp_path / "x"), *layout, *TINY, timeout=60)
        assert r.returncode == 2 and "invalid process layout" in r.stderr
    r = _jmmda("train", "--data", str(small_store), "--out", str(tmp_path / "x"), "--nnodes", "2", "--batch-size", "4", *TINY,
               timeout=60)
    assert r.returncode == 2 and "--master-addr" in r.stderr
    assert not (tmp_path / "x").exists()  # nothing started, nothing written


def _worker_pids(local_rank: str) -> list[int]:
    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.environ().get("LOCAL_RANK") == local_rank and "jmmda_model.distributed" in " ".join(p.cmdline()):
                pids.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return pids


def test_a_killed_rank_ends_the_run_and_leaves_the_last_checkpoint_valid(small_store, tmp_path):
    from jmmda_model.networks import GeneratorConfig

    cases = find_cases(small_store)
    cfg = TrainConfig(generator=GeneratorConfig(base_channels=8, depth=2, heads=2).to_dict(), epochs=500, batch_size=2,
                      max_steps_per_epoch=1, progress=False, tensorboard=False)
    run = tmp_path / "run"
    result = {}

    def go():
        try:
            result["summary"] = launch(asdict(cfg), cases, [], run, 2, timeout=240)
        except DistributedError as exc:
            result["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    last = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (last.exists() and ckpt_io.load(last)["epoch"] >= 2):
        time.sleep(0.2)
    assert last.exists(), "no checkpoint within 180 s"
    victims = _worker_pids("1")
    assert victims, "rank 1 not found"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    t.join(120)
    assert not t.is_alive(), "torchrun did not end the run after a rank died"
    assert "error" in result and "last.pt" in str(result["error"])
    import json

    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    assert not _worker_pids("0"), "rank 0 outlived the run"
    ck = ckpt_io.load(last)  # a complete, loadable checkpoint of a finished epoch
    assert ck["epoch"] >= 2 and ck["global_step"] == ck["epoch"]
    # ... and training resumes from it (one process here)
    cfg.epochs = ck["epoch"] + 1
    out = Trainer(cfg, run).fit(cases, [], resume=True)
    assert out["epoch"] == ck["epoch"] + 1 and out["global_step"] == ck["global_step"] + 1


def test_monailabel_train_task_multi_gpu_option_runs_the_torchrun_path(small_store, tmp_path):
    """The MONAI Label train task with ``multi_gpu`` (here with nproc_per_node=2 on CPU: gloo) publishes a version."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps" / "ct2dwi"))
    from ct2dwi_app.datastore import SafeLocalDatastore
    from ct2dwi_app.train import CT2DWITrain, process_count, validate_options
    from ct2dwi_app.versions import ModelVersions

    from jmmda_model.errors import InputError

    assert process_count(validate_options({"multi_gpu": True, "gpus": "all", "device": "cpu"})) == (1, None)
    assert process_count(validate_options({"multi_gpu": True, "nproc_per_node": 2, "gpus": "0,1", "batch_size": 4})) == (2, [0, 1])
    for bad in ({"gpus": "0,0"}, {"gpus": "../1"}, {"multi_gpu": "yes"}, {"nproc_per_node": -1},
                {"multi_gpu": True, "gpus": "0,1,2", "batch_size": 8}):
        with pytest.raises(InputError):
            validate_options(bad)
    versions = ModelVersions(tmp_path / "model")
    task = CT2DWITrain(tmp_path / "model", versions)
    store = SafeLocalDatastore(str(small_store), extensions=("*.nii.gz",), auto_reload=False)
    out = task({"multi_gpu": True, "nproc_per_node": 2, "device": "cpu", "epochs": 1, "batch_size": 2,
                "max_steps_per_epoch": 2, "fine_tune": False}, store)
    assert out["processes"] == 2 and out["state"] == "finished" and out["published_version"] == 1
    assert versions.served_id() == 1 and ckpt_io.load(versions.path(1))["global_step"] == 2
