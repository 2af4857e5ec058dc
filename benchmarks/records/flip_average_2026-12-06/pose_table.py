"""Tables of poses.py rows: r(pose, centred) / superpixel r per seed, and the means per arm (and the drop of the
superpixel r against the centred scan's)."""
import json
import sys

import numpy as np

for path in sys.argv[1:]:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    poses = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    print(f"## {path}\n\n| seed | flip average | superpixel r centred | " + " | ".join(poses) + " |")
    print("|---" * (3 + len(poses)) + "|")
    for r in rows:
        print(f"| {r['seed']} | {'yes' if r['flip_average'] else 'no'} | {r['sp_centred']:.3f} | "
              + " | ".join(f"{r[p]['r']:.3f} / {r[p]['sp']:.3f}" for p in poses) + " |")
    print("\nMeans over seeds: r(pose, centred); superpixel drop (pose minus centred)\n")
    for arm in (False, True):
        sel = [r for r in rows if r["flip_average"] == arm]
        if not sel:
            continue
        print(f"- flip average {'yes' if arm else 'no'} ({len(sel)} seeds): centred superpixel "
              f"{np.mean([r['sp_centred'] for r in sel]):.3f}; "
              + "; ".join(f"{p} {np.mean([r[p]['r'] for r in sel]):.3f} (min {min(r[p]['r'] for r in sel):.3f}), "
                          f"{np.mean([r[p]['sp'] - r['sp_centred'] for r in sel]):+.3f}" for p in poses))
    print()
