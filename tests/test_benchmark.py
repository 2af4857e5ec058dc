"""The benchmark runs what it says: exact step counts, seeds, baselines, paired statistics, targets."""
import json
import os
import sys
import types

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import compare_models as bench  # noqa: E402


@pytest.mark.slow
def test_small_benchmark_reports_exact_steps_and_statistics(tmp_path):
    res = bench.main(["--arms", "pix2pix,jmmda,constant,lut", "--steps", "3", "--seeds", "0,1", "--train-cases", "2",
                      "--test-ids", "phantom_001,phantom_003", "--batch-size", "2", "--no-inference", "--out", str(tmp_path)])
    for name in ("pix2pix", "jmmda"):
        arm = res["arms"][name]
        assert [r["steps"] for r in arm["runs"]] == [3, 3] and [r["seed"] for r in arm["runs"]] == [0, 1]
        assert arm["gflops_per_slice"] > 0
        assert set(arm["runs"][0]["cases"]) == {"phantom_001", "phantom_003"}
    assert res["arms"]["jmmda"]["gflops_per_slice"] > res["arms"]["pix2pix"]["gflops_per_slice"]
    p = res["paired"]["jmmda"]["psnr_brain"]
    assert p["n_cases"] == 2 and p["ci95"][0] <= p["mean_diff"] <= p["ci95"][1] and p["verdict"] in ("tie", "better", "worse")
    # the lookup table uses the CT: it beats the constant in-brain mean
    assert res["arms"]["lut"]["summary"]["psnr_brain"]["mean"] > res["arms"]["constant"]["summary"]["psnr_brain"]["mean"]
    sens = res["arms"]["constant"]["summary"]["sensitivity"]
    assert sens["all"]["n"] > 0 and sens["all"]["shown"] == 0  # a constant shows no lesion
    md = (tmp_path / "results.md").read_text()
    assert "exactly 3 optimiser steps" in md and ("MISSED" in md or "MET" in md)
    assert (tmp_path / "lesion_sensitivity.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["machine"]["cores"] >= 1 and saved["config"]["seeds"] == [0, 1]


def test_t_confidence_interval_and_tie():
    m, lo, hi = bench.t_ci(np.array([1.0, 1.2, 0.8, 1.1]))
    assert lo < m < hi and lo > 0
    arm = {"runs": [{"cases": {"a": {"psnr_brain": 20.0}, "b": {"psnr_brain": 21.0}, "c": {"psnr_brain": 19.0}}}]}
    ref = {"runs": [{"cases": {"a": {"psnr_brain": 20.5}, "b": {"psnr_brain": 20.5}, "c": {"psnr_brain": 19.0}}}]}
    assert bench.paired(arm, ref, "psnr_brain")["verdict"] == "tie"
    # two seeds: every case of seed 0 is 1 dB better, of seed 1 0.05 dB: better for these runs, a tie for the recipe
    cases = [f"c{i}" for i in range(20)]
    ref2 = {"runs": [{"cases": {c: {"psnr_brain": 20.0 + i % 3} for i, c in enumerate(cases)}} for _ in range(2)]}
    arm2 = {"runs": [{"cases": {c: {"psnr_brain": 20.0 + i % 3 + shift} for i, c in enumerate(cases)}}
                     for shift in (1.0, 0.05)]}
    p2 = bench.paired(arm2, ref2, "psnr_brain")
    assert p2["verdict_cases"] == "better" and p2["n_seeds"] == 2 and p2["verdict"] == "tie"
    assert p2["ci95_seeds"][0] < 0 < p2["ci95_seeds"][1] and p2["mean_diff"] == pytest.approx(0.525)


def test_lookup_table_recovers_a_deterministic_mapping():
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    brain = np.zeros((4, 40, 40), np.uint8)
    brain[:, 5:35, 5:35] = 1
    ct = np.where(brain > 0, rng.uniform(10, 60, brain.shape), -1000.0)
    from scipy import ndimage as ndi

    dwi = np.clip(ndi.gaussian_filter(ct, (0, 1, 1)) / 200.0, 0, 1) * brain
    lc = SimpleNamespace(ct_hu=ct, brain=brain, dwi=dwi, spacing_zyx=(5.0, 1.0, 1.0))
    pred = bench.LookupTable().fit([lc]).predict(lc)
    assert np.abs(pred - dwi)[brain > 0].mean() < 0.01


@pytest.mark.slow
def test_learning_curves_extend_a_finished_run_and_refuse_other_settings(tmp_path):
    """A finished learning-curve run asked for more steps goes on from its last checkpoint (the evaluated points
    kept, the new ones added, its table recomputed identically); fewer steps or another recipe in the same folder
    are refused."""
    import learning_curves as lc

    base = ["--out", str(tmp_path), "--arms", "jmmda,lut", "--seeds", "0", "--eval-every", "2", "--batch-size", "2",
            "--patch-size", "32", "--base-channels", "8", "--depth", "2", "--train-cases", "2", "--cal-cases", "1",
            "--test-cases", "1", "--workers", "1", "--device", "cpu"]
    assert lc.main(base + ["--steps", "2"]) == 0
    first = json.loads((tmp_path / "jmmda_s0" / "curve.json").read_text())
    assert first["done"] and [p["step"] for p in first["points"]] == [2]
    assert lc.main(base + ["--steps", "4"]) == 0
    curve = json.loads((tmp_path / "jmmda_s0" / "curve.json").read_text())
    assert curve["done"] and curve["steps"] == 4 and [p["step"] for p in curve["points"]] == [2, 4]
    assert curve["points"][0] == first["points"][0]  # the earlier evaluation kept as it was
    assert json.loads((tmp_path / "run_args.json").read_text())["steps"] == 4
    for other in (["--steps", "3"], ["--steps", "4", "--lr", "1e-3"], ["--steps", "6", "--lr-schedule", "cosine"]):
        with pytest.raises(SystemExit):
            lc.main(base + other)
    assert json.loads((tmp_path / "jmmda_s0" / "curve.json").read_text()) == curve
    # a cosine run's learning rate is set by its --steps: it is never extended (that would be another schedule)
    cos = tmp_path / "cos"
    cos_args = [x if x != str(tmp_path) else str(cos) for x in base] + ["--lr-schedule", "cosine"]
    cos.mkdir()
    os.link(tmp_path / "phantoms_2_1_1.pkl", cos / "phantoms_2_1_1.pkl")  # the same phantoms, not built again
    assert lc.main(cos_args + ["--steps", "2"]) == 0
    with pytest.raises(SystemExit):
        lc.main(cos_args + ["--steps", "4"])
    assert "cosine to x0.05 at step 2" in (cos / "curves.md").read_text()


def test_learning_curves_refuse_to_resume_an_old_folder_with_a_setting_it_never_had(tmp_path, capsys):
    """A folder written before --ema/--rotate-deg/--prior-lift-hu/--lambda-adv existed ran without them: resuming
    it with today's defaults would mix two recipes in one curve, so it is refused (and nothing is rewritten); the
    report of the same folder states the values the old run used."""
    import learning_curves as lc

    old = {"steps": 2, "eval_every": 2, "batch_size": 2, "patch_size": 32, "lr": 2e-4, "base_channels": 8, "depth": 2,
           "heads": 4, "train_cases": 2, "cal_cases": 1, "test_cases": 1, "arms": "jmmda", "seeds": "0"}
    (tmp_path / "run_args.json").write_text(json.dumps(old))
    base = ["--out", str(tmp_path), "--arms", "jmmda", "--seeds", "0", "--eval-every", "2", "--batch-size", "2",
            "--patch-size", "32", "--base-channels", "8", "--depth", "2", "--train-cases", "2", "--cal-cases", "1",
            "--test-cases", "1", "--workers", "1", "--device", "cpu", "--steps", "2", "--lr", "2e-4", "--heads", "4"]
    with pytest.raises(SystemExit) as e:
        lc.main(base)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "ema=0.0" in err and "rotate_deg=0.0" in err and "prior_lift_hu=0.0" in err
    assert json.loads((tmp_path / "run_args.json").read_text()) == old  # untouched
    assert not list(tmp_path.glob("*.pkl"))  # nothing built
    assert lc.SETTINGS_BEFORE_THEY_EXISTED["ema"] == 0.0


def test_lesion_audit_counts_what_lesion_metrics_counts_and_resumes(tmp_path, capsys):
    """The audit's per-lesion rows are lesion_metrics' (shown = synthetic ratio >= 1.3, darker < 1), the summary's
    counts and Wilson interval follow from them, false-bright parts never exceed the whole, a rerun skips finished
    cases, and a folder holding another model's or seed range's audit is refused."""
    import lesion_audit as la

    from conftest import DEMO_MODEL

    assert np.isnan(la.wilson(0, 0)[0])
    lo, hi = la.wilson(8, 10)
    assert 0.49 < lo < 0.50 and 0.94 < hi < 0.95  # the textbook value (0.490, 0.943)
    for bad in ("30000-30010", "5:3", "a:b"):
        with pytest.raises(Exception):
            la.parse_seeds(bad)
    out = tmp_path / "audit"
    assert la.main(["--model", str(DEMO_MODEL), "--seeds", "30012:30013", "--out", str(out)]) == 0
    (case,) = [json.loads(x) for x in (out / "cases.jsonl").read_text().splitlines()]
    summary = json.loads((out / "audit.json").read_text())
    assert case["case"] == "phantom_30012" and len(case["lesions"]) == summary["lesions"] >= 1
    for x in case["lesions"]:
        assert x["shown"] == (x["ratio_syn"] >= 1.3) and x["darker"] == (x["ratio_syn"] < 1.0)
        assert 0.0 <= x["height"] <= 1.0 and 0.0 <= x["p_mean"] <= x["p_max"] <= 1.0
    q = [x for x in case["lesions"] if x["qualifying"]]
    assert summary["qualifying"]["n"] == len(q) >= 1 and summary["qualifying"]["shown"] == sum(x["shown"] for x in q)
    assert summary["qualifying"]["ci95"] == list(la.wilson(summary["qualifying"]["shown"], len(q)))
    assert sum(v["n"] for v in summary["by"]["height"].values()) == len(q)
    assert summary["probability_temperature"] > 0 and "calibrated (temperature" in (out / "audit.md").read_text()
    assert summary["table"]["psnr_brain"] == pytest.approx(case["table"]["psnr_brain"]) and "own lookup table" in (out / "audit.md").read_text()
    for part in summary["false_bright_make_up_ml"].values():
        assert 0.0 <= part <= case["false_bright_ml"] + 1e-9
    # the probability map lesion-wise: a lesion is found at a threshold exactly when its maximal probability reaches
    # it (same labelling as the rows), and the issue's lesions are the rows' qualifying ones
    pm = case["probability"]
    assert pm["counted"] == [x["qualifying"] for x in case["lesions"]]
    for row in pm["froc"]:
        assert row["detected"] == [x["p_max"] >= row["threshold"] - 1e-4 for x in case["lesions"]]
    ps = summary["probability_map"]
    assert ps["qualifying"]["lesions"] == len(q) and ps["all"]["lesions"] == len(case["lesions"])
    assert 0 <= ps["qualifying"]["found_at_max_fp"] <= len(q) and 0.0 <= ps["ece"] <= 1.0
    assert "Probability map, lesion-wise" in (out / "audit.md").read_text()
    capsys.readouterr()
    assert la.main(["--model", str(DEMO_MODEL), "--seeds", "30012:30013", "--out", str(out)]) == 0
    assert "phantom_30012:" not in capsys.readouterr().out  # finished: not run again
    assert len((out / "cases.jsonl").read_text().splitlines()) == 1
    with pytest.raises(SystemExit):
        la.main(["--model", str(DEMO_MODEL), "--seeds", "30012:30014", "--out", str(out)])


def test_lesion_audit_probability_summary():
    """The audit's probability-map summary: the best sensitivity among thresholds within 2 FP clusters per case,
    over the issue's lesions and over all; none when a case has no probability (no lesion head, or an older
    audit)."""
    import lesion_audit as la

    def case(detected_by_t, fp_by_t, counted):
        return {"probability": {"froc": [{"threshold": t, "fp": fp_by_t[t], "detected": detected_by_t[t]}
                                         for t in (0.3, 0.5, 0.7)],
                                "lesion_volumes_ml": [5.0] * len(counted), "counted": counted,
                                "reliability": {"count": [10.0, 0.0], "sum_p": [1.0, 0.0], "sum_y": [1.0, 0.0]}}}

    cases = [case({0.3: [True, True], 0.5: [True, False], 0.7: [False, False]}, {0.3: 5, 0.5: 2, 0.7: 0},
                  [True, False]),
             case({0.3: [True], 0.5: [True], 0.7: [False]}, {0.3: 3, 0.5: 1, 0.7: 0}, [True])]
    s = la.probability_summary(cases)
    # threshold 0.3 has 4 FP/case: out; 0.5 has 1.5: the 2 lesions both found there; all 3: 2 of 3
    assert s["qualifying"] == {"lesions": 2, "found_at_max_fp": 2, "sensitivity_at_max_fp": 1.0, "threshold": 0.5,
                               "fp_per_case": 1.5, "sensitivity_at_0.5": 1.0, "fp_per_case_at_0.5": 1.5}
    assert s["all"]["found_at_max_fp"] == 2 and s["all"]["sensitivity_at_max_fp"] == pytest.approx(2 / 3)
    assert s["ece"] == pytest.approx(0.0)
    assert "2 of 2 = 100 %" in la.probability_lines(s)[0] and "MET" in la.probability_lines(s)[0]
    s = la.probability_summary(cases, max_fp=1.0)  # only 0.7 keeps to 1 FP/case: nothing found
    assert s["qualifying"]["found_at_max_fp"] == 0 and "MISSED" in la.probability_lines(s)[0]
    assert la.probability_summary(cases + [{"probability": None}]) is None and la.probability_lines(None) == []


def test_lesion_audit_ensemble_is_the_members_mean():
    """lesion_audit.Ensemble (--model with several checkpoints): the mean synthesis and the mean lesion logit of its
    members, each called with the same CT, plane and mirror; no logits when a member has none; the first member's
    preprocessing and probability."""
    import lesion_audit as la

    calls = []

    class Member:
        def __init__(self, k, logits=True):
            self.k, self.logits, self.pre = k, logits, f"pre{k}"

        def predict_volume(self, ct, brain, spacing, plane=None, mirror=None):
            calls.append((self.k, plane, mirror))
            return ct * self.k, (np.full(ct.shape, float(self.k)) if self.logits else None), {"pose": self.k}

        def probability(self, logits):
            return logits / 10.0

    ct = np.arange(8.0).reshape(2, 2, 2)
    ens = la.Ensemble([Member(1), Member(2), Member(6)])
    y, logits, pose = ens.predict_volume(ct, None, (5.0, 1.8, 1.8), "plane", "mirror")
    assert np.allclose(y, ct * 3.0) and np.allclose(logits, 3.0) and pose == {"pose": 1}
    assert calls == [(k, "plane", "mirror") for k in (1, 2, 6)]
    assert ens.pre == "pre1" and np.allclose(ens.probability(logits), 0.3)
    assert la.Ensemble([Member(1), Member(2, logits=False)]).predict_volume(ct, None, (5.0, 1.8, 1.8))[1] is None


def test_paired_audits_pair_cases_and_lesions(tmp_path):
    """paired_runs.py audits: the i-th audit of A against the i-th of B, case by case (shared cases only) and lesion
    by lesion; unequal folder counts and differing lesion lists are refused."""
    import paired_runs

    def lesion(shown, q=True, md=-5.0):
        return {"shown": shown, "darker": False, "qualifying": q, "mirror_diff_hu": md}

    def write(folder, cases):
        folder.mkdir()
        (folder / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))

    def case(name, psnr, fb, lesions):
        return {"case": name, "psnr_brain": psnr, "false_bright_ml": fb, "lesions": lesions}

    write(tmp_path / "a", [case("p1", 29.0, 10.0, [lesion(True), lesion(False, md=-15.0)]),
                           case("p2", 28.0, 20.0, [lesion(True, q=False)]), case("p3", 30.0, 0.0, [])])
    write(tmp_path / "b", [case("p1", 29.5, 8.0, [lesion(False), lesion(True, md=-15.0)]),
                           case("p2", 28.5, 18.0, [lesion(False, q=False)])])
    res = paired_runs.cmd_audits(types.SimpleNamespace(a=str(tmp_path / "a"), b=str(tmp_path / "b")))
    assert res["paired"]["psnr_brain"][3] == 2  # p3 is in A only: not paired
    assert res["paired"]["psnr_brain"][2][0] == pytest.approx(0.5) and res["paired"]["false_bright_ml"][2][0] == pytest.approx(-2.0)
    assert res["qualifying_discordant"] == {"both": 0, "a_only": 1, "b_only": 1}
    assert res["below_mirror_12hu"] == {"n": 1, "a_shown": 0, "b_shown": 1}
    with pytest.raises(SystemExit):
        paired_runs.cmd_audits(types.SimpleNamespace(a=f"{tmp_path / 'a'},{tmp_path / 'a'}", b=str(tmp_path / "b")))
    write(tmp_path / "c", [case("p1", 29.0, 10.0, [lesion(True)])])
    with pytest.raises(SystemExit, match="different lesions"):
        paired_runs.cmd_audits(types.SimpleNamespace(a=str(tmp_path / "a"), b=str(tmp_path / "c")))


def test_recipe_verdicts_come_from_the_interval_over_seeds(tmp_path):
    """Two recipes' audits: a difference every case of one seed shares (that checkpoint's draw) is not the recipe's.
    Seed 0's B is 2 mL better on every case, seed 1's 0.1 mL: over 2 x 30 cases B is better for these runs, over the
    2 seeds it is a tie - and the recipe verdict says tie."""
    import paired_runs

    rng = np.random.default_rng(0)

    def write(folder, fbs):
        folder.mkdir()
        (folder / "cases.jsonl").write_text("".join(
            json.dumps({"case": f"p{i}", "psnr_brain": 29.0, "false_bright_ml": float(v), "lesions": []}) + "\n"
            for i, v in enumerate(fbs)))

    base = [rng.uniform(5, 25, 30) for _ in range(2)]
    for s, shift in ((0, -2.0), (1, -0.1)):
        write(tmp_path / f"a{s}", base[s])
        write(tmp_path / f"b{s}", base[s] + shift + rng.normal(0, 0.05, 30))
    res = paired_runs.cmd_audits(types.SimpleNamespace(a=f"{tmp_path / 'a0'},{tmp_path / 'a1'}",
                                                        b=f"{tmp_path / 'b0'},{tmp_path / 'b1'}"))
    d, lo, hi = res["paired"]["false_bright_ml"][2]
    assert hi < 0  # over cases: B better for these runs
    sd, slo, shi, n = res["paired_by_seed"]["false_bright_ml"]
    assert n == 2 and sd == pytest.approx(d) and slo < 0 < shi
    row = next(line for line in res["markdown"].splitlines() if line.startswith("| false-bright"))
    assert row.rstrip(" |").endswith("tie") and "B better" in row


def test_paired_curves_mean_over_steps(tmp_path):
    """paired_runs.py curves --mean-over-steps: each case's figures averaged over the evaluations both runs reached
    (from --from-step), then paired; with --step it is refused."""
    import paired_runs

    def write(folder, seed, by_step):
        d = folder / f"jmmda_s{seed}"
        d.mkdir(parents=True)
        pts = [{"step": t, "psnr_brain": 29.0, "false_bright_ml": float(np.mean(v)), "qualifying_sensitivity": 0.5,
                "darker": 0, "darker_qualifying": 0,
                "per_case": [{"case": f"p{i}", "psnr_brain": 29.0, "false_bright_ml": x, "shown": 1, "darker": 0,
                              "darker_qualifying": 0} for i, x in enumerate(v)]} for t, v in by_step.items()]
        (d / "curve.json").write_text(json.dumps({"points": pts}))

    for s in (0, 1):
        write(tmp_path / "a", s, {250: [10.0, 20.0], 500: [30.0, 40.0]})
        write(tmp_path / "b", s, {250: [10.0, 20.0], 500: [10.0, 20.0], 750: [99.0, 99.0]})  # 750: B only
    ns = dict(a=str(tmp_path / "a"), b=str(tmp_path / "b"), arm="jmmda", arm_b=None, seeds="0,1", step=None)
    res = paired_runs.cmd_curves(types.SimpleNamespace(**ns, mean_over_steps=True, from_step=0))
    assert res["paired"]["false_bright_ml"][2][0] == pytest.approx(-10.0)  # (10 + 20 vs 30 + 40) / 2 per case
    res = paired_runs.cmd_curves(types.SimpleNamespace(**ns, mean_over_steps=True, from_step=500))
    assert res["paired"]["false_bright_ml"][2][0] == pytest.approx(-20.0)
    last = paired_runs.cmd_curves(types.SimpleNamespace(**ns, mean_over_steps=False, from_step=0))
    assert last["paired"]["false_bright_ml"][2][0] == pytest.approx(-20.0)  # the last common step, 500
    with pytest.raises(SystemExit, match="exclude"):
        paired_runs.cmd_curves(types.SimpleNamespace(**{**ns, "step": 500}, mean_over_steps=True, from_step=0))
