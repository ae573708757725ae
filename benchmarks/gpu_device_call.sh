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
run() {  # task name sentences
  python3 benchmarks/gpu_profile_run.py --task "$1" --teacher outputs/gpu_carry/teacher_fp16 \
    --data-dir outputs/gpu_carry/data --out "$OUT" --name "$2" \
    --set "output_dir=/tmp/kdnb-gpu-$1" "augment.gpt2.n_sentences=$3" bilstm.epochs=6 \
    bert_student.epochs=10 bert_student.warmup_epochs=1.67 2>&1 | grep -av "it/s"
}
first=1
for spec in ${TASKS:-cola:200000 sara:100000}; do  # task:sentences; the first runs in full, the others in the time left
  task=${spec%%:*}; n=${spec##*:}
  if [ "$first" = 1 ]; then
    run "$task" "h200_${task}_gpu_reduced" "$n"; first=0; continue
  fi
  left=$((BUDGET_S - SECONDS))
  if [ "$left" -gt 90 ]; then
    timeout "$left" bash -c "$(declare -f run); OUT='$OUT'; run $task h200_${task}_gpu_reduced $n"
  else
    echo "[gpu_device_call] ${left} s left of ${BUDGET_S}: $task skipped"
  fi
done
echo "[gpu_device_call] ${SECONDS} s"
