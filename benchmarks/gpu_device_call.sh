#!/usr/bin/env bash
# The one device call of issue 16 (benchmarks/README.md, "The gpu profile on a machine without
# network"), run ON the GPU machine in a copy of the checkout, after benchmarks/gpu_prepare.sh ran
# here. Carry: .whl, outputs/gpu_carry/teacher_fp16, outputs/gpu_carry/data/cola,
# outputs/gpu_carry/data/sara. Writes into $OUT (default benchmarks/results):
#   crash_tests.log                  tests/test_cuda_graphs.py (captures under a 4-worker pinned loader)
#   h200_cola_gpu_reduced.{json,md}  the cola gpu profile at reduced scale: 200,000 GPT-2 sentences,
#                                    6 BiLSTM and 10 BERT-student epochs (warm-up 10/60 of them)
#   h200_sara_gpu_reduced.{json,md}  the same for sara with 100,000 sentences, in the time left of
#                                    BUDGET_S seconds (default 520); each json is rewritten after
#                                    every stage, so a run cut off still keeps what it finished
# TASKS='sara:100000' CRASH_TESTS=0 runs one task alone (the first task of TASKS runs in full).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
BUDGET_S=${BUDGET_S:-520}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, transformers, datasets; print('torch', torch.__version__, 'transformers', transformers.__version__, 'datasets', datasets.__version__)" | tee -a "$OUT/device.txt"
[ "${CRASH_TESTS:-1}" = 1 ] && python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | tee "$OUT/crash_tests.log"
run() {  # task sentences [seconds; 0: no limit]
  timeout "${3:-0}" python3 benchmarks/gpu_profile_run.py --task "$1" --teacher outputs/gpu_carry/teacher_fp16 \
    --data-dir outputs/gpu_carry/data --out "$OUT" --name "h200_$1_gpu_reduced" \
    --set "output_dir=/tmp/kdnb-gpu-$1" "augment.gpt2.n_sentences=$2" bilstm.epochs=6 \
    bert_student.epochs=10 bert_student.warmup_epochs=1.67 2>&1 | grep -av "it/s"
}
left=  # seconds left of BUDGET_S: unset for the first task of TASKS, which runs in full
for spec in ${TASKS:-cola:200000 sara:100000}; do  # task:sentences
  task=${spec%%:*}; n=${spec##*:}
  if [ -n "$left" ] && [ "$left" -le 90 ]; then
    echo "[gpu_device_call] ${left} s left of ${BUDGET_S}: $task skipped"; continue
  fi
  run "$task" "$n" "${left:-0}"
  left=$((BUDGET_S - SECONDS))
done
echo "[gpu_device_call] ${SECONDS} s"
