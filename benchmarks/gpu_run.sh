#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see README, Benchmarks): the learning-curve benchmark, longer than the
# CPU one, and the demo model's training, side by side on the one GPU; results under $OUT.
#   bash benchmarks/gpu_run.sh            (wheels for what that machine lacks travel in .whl/)
set -uo pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/device.txt"
BENCH_STEPS=${BENCH_STEPS:-3000}
DEMO_STEPS=${DEMO_STEPS:-6000}
DEMO_MIN=${DEMO_MIN:-6}
timeout ${BUDGET_S:-450} python3 benchmarks/train_demo.py --out /tmp/demo --steps "$DEMO_STEPS" --val-every 1000 \
  --batch-size 32 --workers ${DEMO_WORKERS:-4} --train-cases ${DEMO_CASES:-160} --val-cases 8 --max-minutes "$DEMO_MIN" \
  --max-pitch-deg ${DEMO_PITCH:-12} --hard-negative-fraction ${HN:-0} --noise-augment-hu ${NOISE:-0} --residual-bound ${RB:-0} \
  > "$OUT/demo.log" 2>&1 &
DEMO=$!
[ "${MODE:-both}" = demo ] || timeout ${BUDGET_S:-450} python3 benchmarks/learning_curves.py --out /tmp/curves --steps "$BENCH_STEPS" --eval-every 500 \
  --seeds 0,1,2 --train-cases 160 --cal-cases 12 --test-cases 24 --base-channels 16 --batch-size 32 --workers 12 \
  --threads 1 --hard-negative-fraction ${HN:-0} --noise-augment-hu ${NOISE:-0} --residual-bound ${RB:-0} > "$OUT/curves.log" 2>&1
echo "benchmark exit $? (mode ${MODE:-both})" >> "$OUT/device.txt"
wait $DEMO; echo "demo exit $?" >> "$OUT/device.txt"
cp /tmp/curves/curves.json /tmp/curves/curves.md /tmp/curves/learning_curves.png "$OUT/" 2>/dev/null
cp /tmp/demo/model.pt "$OUT/demo_model.pt" 2>/dev/null
# the new demo's lesion audit on fresh test phantoms (resumable: what finished inside the budget is kept)
[ -f /tmp/demo/model.pt ] && timeout ${AUDIT_S:-150} python3 benchmarks/lesion_audit.py --model /tmp/demo/model.pt \
  --seeds 30000:30120 --out /tmp/audit --device cuda > "$OUT/audit.log" 2>&1
cp /tmp/audit/cases.jsonl /tmp/audit/audit.md "$OUT/" 2>/dev/null
# partial curves if the budget ran out
[ -f "$OUT/curves.json" ] || (cd /tmp/curves && tar czf "$OUT/curve_points.tgz" */curve.json 2>/dev/null)
ls -la "$OUT"
