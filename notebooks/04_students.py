# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Students
#
# Distils the teacher into the students named in params. The BiLSTM of Tang et al. (2019):
# one bidirectional LSTM layer (300 units per direction), the concatenated final states, a
# 400-unit ReLU layer, logits; embeddings initialised from the teacher's WordPiece embeddings;
# trained with MSE between student and teacher logits (Adadelta, lr 1.0, ρ 0.95, batch 50,
# gradient clipping 30).

# %% tags=["parameters"]
task = "cola"
profile = "smoke"
data_dir = None  # None: the data_dir of params/<task>.yaml
force = False

# %%
import datasets

from kdnb import report
from kdnb.config import load_config
from kdnb.data import load_task, task_spec
from kdnb.errors import StageInputError
from kdnb.students import distill_bilstm

cfg = load_config(task, profile, data_dir=data_dir)
dsd = load_task(cfg.task, cfg.data_path)
metric = task_spec(task).metric_label
transfer_dir = cfg.out / "transfer" / cfg.augment.transfer_set
if not transfer_dir.is_dir():
    raise StageInputError(f"{transfer_dir}: no transfer set; run notebooks 02/03 first.")
transfer = datasets.load_from_disk(str(transfer_dir))
print(f"transfer set '{cfg.augment.transfer_set}': {len(transfer)} sentences")

# %% [markdown]
# ## BiLSTM student

# %%
if cfg.bilstm.enabled:
    bilstm = distill_bilstm(cfg, transfer, dsd, force=force)
    if not bilstm.reused:
        report.record_stage(cfg, "bilstm_training", bilstm.seconds)
    report.record_model(cfg, "bilstm", n_params=bilstm.n_params, dev=bilstm.dev_score, test=bilstm.test_score,
                        model="BiLSTM (Tang et al. 2019)", loss=cfg.bilstm.loss,
                        transfer_set=cfg.augment.transfer_set)

# %%
# NBVAL_CHECK_OUTPUT
if cfg.bilstm.enabled:
    print(f"parameters: {bilstm.n_params:,}")
    print(f"dev {metric}: {100 * bilstm.dev_score:.1f} %")
    print(bilstm.curve.round(4).to_string(index=False))
