import json, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
from jmmda_model.phantom import PhantomConfig, make_case
rows = {}
for h in ("a", "b"):
    for line in open(f"benchmarks/records/audit_demo_candidate_2026-12-05/{h}/cases.jsonl"):
        d = json.loads(line); rows[d["case"]] = d
old = {}
for line in open("benchmarks/records/audit_demo_2026-12-05/cases.jsonl"):
    d = json.loads(line); old[d["case"]] = d
out = []
for cid, d in sorted(rows.items()):
    seed = int(cid.split("_")[1])
    m = make_case(seed, PhantomConfig())["meta"]
    out.append({"case": cid, "fb_new": d["false_bright_ml"], "fb_old": old[cid]["false_bright_ml"], **{k: v for k, v in m.items() if isinstance(v, (int, float, str))}})
    print(json.dumps(out[-1]), flush=True)
