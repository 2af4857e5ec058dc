"""Summary of scanner_noise.jsonl and round_trip.jsonl: per pose, mean r over the heads (and by the head's CT
noise: below / above 4 HU), beside the round trip's r (the centred synthesis to the pose's grid and back)."""
import json
import sys

import numpy as np

sn = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rt = {r["seed"]: r for r in (json.loads(line) for line in open(sys.argv[2]) if line.strip())}
poses = [k for k in sn[0] if isinstance(sn[0][k], dict)]
low = [r for r in sn if r["noise_hu"] < 4.0]
high = [r for r in sn if r["noise_hu"] >= 4.0]
print("| pose | r, each scan its own noise: 6 heads | CT noise < 4 HU (heads " + ", ".join(str(r["seed"]) for r in low)
      + ") | >= 4 HU (heads " + ", ".join(str(r["seed"]) for r in high) + ") | round trip of the centred synthesis |")
print("|---|---|---|---|---|")
for p in poses:
    trip = [rt[r["seed"]][p] for r in sn if p in rt.get(r["seed"], {})]
    print(f"| {p} | {np.mean([r[p]['r'] for r in sn]):.3f} ({min(r[p]['r'] for r in sn):.3f}-{max(r[p]['r'] for r in sn):.3f}) | "
          f"{np.mean([r[p]['r'] for r in low]):.3f} | {np.mean([r[p]['r'] for r in high]):.3f} | "
          + (f"{np.mean(trip):.3f} ({min(trip):.3f}-{max(trip):.3f})" if trip else "-") + " |")
