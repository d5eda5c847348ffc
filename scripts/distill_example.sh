#!/usr/bin/env bash
# Distillation at tiny scale (DeepSeek-R1 Table 6's question): the RL-trained demo model (stage reasoning_rl of
# configs/pipelines/tiny-cpu.yaml) teaches a smaller student (hidden 64, FFN 256: ~1/4 of the demo's weights,
# pretrained on the same corpus), versus the same RL applied to the student directly.
#   1. student base:   thinkrl pretrain --hidden 64 --ffn 256 (skipped when it exists)
#   2. teacher:        scripts/tiny_pipeline.sh --until reasoning_rl (skipped when done)
#   3. distillation:   thinkrl distill (teacher samples, keep correct -> student SFT -> held-out eval)
#   4. RL on student:  thinkrl pipeline configs/pipelines/tiny-student-rl.yaml (eval base -> GRPO -> eval)
# Every step resumes when rerun. One torch thread, niced. Numbers: docs/pipeline.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
OUT=runs/distill-example
TEACHER=runs/pipelines/tiny-cpu/reasoning_rl/model
mkdir -p "$OUT"
SECONDS=0
if [ ! -f "$OUT/student-base/model.safetensors" ]; then
  nice -n 10 "$PY" -m thinkrl pretrain --out "$OUT/student-base" --hidden 64 --ffn 256 --threads 1
fi
if [ ! -f runs/pipelines/tiny-cpu/reasoning_rl/DONE.json ]; then
  scripts/tiny_pipeline.sh --until reasoning_rl
fi
nice -n 10 "$PY" -m thinkrl distill --teacher "$TEACHER" --student "$OUT/student-base" --data builtin:demo \
  --out "$OUT/distill" --limit 64 --k 4 --keep correct --max-per-prompt 2 --max-new-tokens 140 \
  --eval-data builtin:demo --eval-limit 100 \
  sft.train.epochs=3 sft.train.lr=2e-4 sft.train.max_seq_len=1024 sft.train.num_threads=1 eval.batch_size=25
nice -n 10 "$PY" -m thinkrl pipeline configs/pipelines/tiny-student-rl.yaml
echo "total wall: ${SECONDS}s"
for f in "$OUT/student-rl/eval_teacher" "$OUT/student-rl/eval_student_base" "$OUT/distill/eval" "$OUT/student-rl/eval_student_rl"; do
  "$PY" -c "import json,sys; m=json.load(open(sys.argv[1]+'/summary.json'))['metrics']; \
print(f\"{sys.argv[1]:<45} pass@1 {m['pass@1']:.3f} ± {m['pass@1_se']:.3f}\")" "$f"
done
