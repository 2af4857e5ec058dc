"""False-bright brain and lesions shown by thirds of the phantoms' CT noise, for two sets of lesion audits paired seed
by seed (lesion_audit.py folders over the same test seeds). The noise of each test phantom is read from
benchmarks/records/fb_noise_2026-12-05/cases_meta.jsonl (regenerated phantom settings of seeds 30000-30119).

    python benchmarks/records/cpu_noise5_2026-12-05/fb_by_noise.py --a A_S0,A_S1,A_S2 --b B_S0,B_S1,B_S2
"""
import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]


def read(folder):
    return {d["case"]: d for d in map(json.loads, (Path(folder) / "cases.jsonl").read_text().splitlines())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    a = p.parse_args(argv)
    meta = {d["case"]: d["ct_noise_hu"] for d in
            map(json.loads, (ROOT / "benchmarks/records/fb_noise_2026-12-05/cases_meta.jsonl").read_text().splitlines())}
    fa, fb = a.a.split(","), a.b.split(",")
    if len(fa) != len(fb):
        raise SystemExit("--a and --b need the same number of audit folders (one per seed)")
    rows = []  # (noise, fb_a, fb_b, shown_a, shown_b, n_qualifying)
    for x, y in zip(fa, fb):
        ra, rb = read(x), read(y)
        for case in sorted(set(ra) & set(rb) & set(meta)):
            qa = [les["shown"] for les in ra[case]["lesions"] if les["qualifying"]]
            qb = [les["shown"] for les in rb[case]["lesions"] if les["qualifying"]]
            rows.append((meta[case], ra[case]["false_bright_ml"], rb[case]["false_bright_ml"], sum(qa), sum(qb), len(qa)))
    r = np.array(rows, float)
    cuts = np.quantile(np.array(sorted(set(meta.values()))), [1 / 3, 2 / 3])
    print(f"{len(r)} pairs (seed x case); CT noise thirds cut at {cuts[0]:.2f} / {cuts[1]:.2f} HU (phantom scale)\n")
    print("| CT noise (phantom ct_noise_hu) | pairs | false-bright A | B | B - A (95 % CI) | qualifying shown A | B |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, sel in (("lowest third", r[:, 0] <= cuts[0]), ("middle third", (r[:, 0] > cuts[0]) & (r[:, 0] <= cuts[1])),
                      ("highest third", r[:, 0] > cuts[1]), ("all", np.ones(len(r), bool))):
        d = r[sel, 2] - r[sel, 1]
        boot = [rng.choice(d, len(d)).mean() for _ in range(4000)]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"| {name} | {sel.sum()} | {r[sel, 1].mean():.1f} | {r[sel, 2].mean():.1f} | {d.mean():+.1f} [{lo:+.1f}, {hi:+.1f}] "
              f"| {int(r[sel, 3].sum())} / {int(r[sel, 5].sum())} | {int(r[sel, 4].sum())} / {int(r[sel, 5].sum())} |")
    for k, name in ((1, "A"), (2, "B")):
        print(f"\nr(CT noise, false-bright) {name}: {np.corrcoef(r[:, 0], r[:, k])[0, 1]:.2f}")


if __name__ == "__main__":
    main()
