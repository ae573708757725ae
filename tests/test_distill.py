"""kdnb.training.fit.fit: step checkpoints and mid-epoch resume, gradient accumulation, and a student
run killed with SIGKILL mid-epoch that resumes to the identical result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import pytest
import torch

from kdnb.config import PROJECT_ROOT, load_config
from kdnb.data import load_task, subsample
from kdnb.training.fit import fit, make_accelerator, predict_logits

from .conftest import SHARED_DATA


# ---- fit on a tiny regression problem ---------------------------------------------------------
def _regression(n: int = 70):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g)
    return x, y, [{"x": x[i], "y": y[i]} for i in range(n)]


def _collate(rows):
    return {"x": torch.stack([r["x"] for r in rows]), "y": torch.stack([r["y"] for r in rows])}


def _fit(ckpt: Path, *, dropout=0.3, accum=1, batch_size=8, n=70, die_at=None, save_steps=None, lengths=False,
         seen=None, evals_per_epoch=3, evaluate=None, select_best="max"):
    """Train a small MLP for 3 epochs; ``die_at``: the loss call that raises (a simulated kill)."""
    x, y, rows = _regression(n)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Dropout(dropout), torch.nn.ReLU(),
                                torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    acc = make_accelerator("no", accum)
    calls = {"n": 0}

    def loss_fn(m, b):
        calls["n"] += 1
        if calls["n"] == die_at:
            raise KeyboardInterrupt("killed")
        if seen is not None:
            seen.append(len(b["x"]))
        return torch.nn.functional.mse_loss(m(b["x"]), b["y"])

    res = fit(model, train_set=rows, collate_fn=_collate, batch_size=batch_size, loss_fn=loss_fn, optimizer=opt,
              scheduler=sched, epochs=3, evaluate=evaluate or (lambda m: float(m(x).sum())), seed=1, ckpt_dir=ckpt,
              accelerator=acc, evals_per_epoch=evals_per_epoch, save_steps=save_steps,
              lengths=[i % 7 + 1 for i in range(n)] if lengths else None, select_best=select_best)
    return res, [p.detach().clone() for p in acc.unwrap_model(model).parameters()]


@pytest.mark.parametrize("lengths", [False, True], ids=["random", "length-grouped"])
def test_mid_epoch_checkpoint_resumes_to_identical_weights_and_curve(tmp_path, one_thread, lengths):
    whole, w_whole = _fit(tmp_path / "whole", save_steps=5, lengths=lengths)
    # 9 batches per epoch, evaluations after batches 3, 6, 9; the 15th loss call is batch 6 of
    # epoch 2, after the checkpoint at step 10 (batch 1 of epoch 2, one loss not yet in the curve)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "killed", save_steps=5, lengths=lengths, die_at=15)
    state = json.loads((tmp_path / "killed" / "trainer_state.json").read_text())
    assert (state["epochs_done"], state["batches_done"]) == (1, 1) and state["running_batches"] == 1
    resumed, w_resumed = _fit(tmp_path / "killed", save_steps=5, lengths=lengths)
    assert (resumed.resumed_epochs, resumed.resumed_batches) == (1, 1)
    assert resumed.curve == whole.curve and len(whole.curve) == 9
    assert all(torch.equal(a, b) for a, b in zip(w_whole, w_resumed))  # dropout masks replayed too
    assert not (tmp_path / "killed").exists() and (tmp_path / "killed.curve.json").exists()


def test_without_save_steps_a_kill_resumes_from_the_epoch(tmp_path, one_thread):
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "ck", die_at=15)
    state = json.loads((tmp_path / "ck" / "trainer_state.json").read_text())
    assert (state["epochs_done"], state["batches_done"]) == (1, 0)


def test_gradient_accumulation_matches_the_full_batch(tmp_path, one_thread):
    seen: list[int] = []
    full, w_full = _fit(tmp_path / "a", dropout=0.0, n=64)
    acc, w_acc = _fit(tmp_path / "b", dropout=0.0, n=64, accum=4, seen=seen)
    assert set(seen) == {2}  # micro-batches of batch_size / accum
    assert [c["step"] for c in acc.curve] == [c["step"] for c in full.curve] == [3, 6, 8, 11, 14, 16, 19, 22, 24]
    for a, b in zip(w_full, w_acc):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not a multiple of gradient_accumulation_steps 3"):
        _fit(tmp_path / "c", accum=3)


def test_evaluations_never_change_the_training(tmp_path, one_thread):
    """Dropout draws from the global CPU RNG; so did each evaluation's DataLoader (its base seed),
    so evaluating more often used to give other weights."""
    x, _, rows = _regression()

    def dev(m):  # the pipeline's evaluations: predict_logits over a dev set
        return float(predict_logits(m, rows, _collate, 16, lambda mm, b: mm(b["x"])).sum())

    def drawing(m):  # an evaluation that draws from the global RNG itself
        return float(m(x + torch.randn_like(x)).sum())

    # the last weights (select_best keeps the best evaluation's, which depends on where one evaluates)
    once, w_once = _fit(tmp_path / "a", evals_per_epoch=1, evaluate=dev, select_best=None)
    thrice, w_thrice = _fit(tmp_path / "b", evals_per_epoch=3, evaluate=dev, select_best=None)
    _, w_drawing = _fit(tmp_path / "c", evals_per_epoch=2, evaluate=drawing, select_best=None)
    assert (len(once.curve), len(thrice.curve)) == (3, 9)
    assert [c["dev_score"] for c in once.curve] == [c["dev_score"] for c in thrice.curve[2::3]]
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(w_once, w_thrice, w_drawing))
    linear = torch.nn.Linear(5, 1)
    state = torch.random.get_rng_state()
    predict_logits(linear, rows, _collate, 16, lambda m, b: m(b["x"]))
    assert torch.equal(torch.random.get_rng_state(), state)


# ---- model selection: the best dev checkpoint is kept ------------------------------------------
@pytest.mark.parametrize("mode", ["max", "min"])
def test_select_best_returns_the_weights_of_the_best_evaluation(tmp_path, one_thread, mode):
    """The returned model scores what its best evaluation scored, which is not the last one."""
    x, y, _ = _regression()
    snapshots = []

    def dev(m):  # a dev score that rises and falls over the 9 evaluations, and the weights it saw
        snapshots.append([p.detach().clone() for p in m.parameters()])
        return [3.0, 5.0, 9.0, 4.0, 9.0, 2.0, 1.0, 6.0, 0.5][len(snapshots) - 1] * (1 if mode == "max" else -1)

    res, weights = _fit(tmp_path / "ck", evaluate=dev, select_best=mode, dropout=0.0)
    assert res.best == {k: res.curve[2][k] for k in ("step", "epoch", "dev_score")}  # ties keep the first
    assert res.best_score == res.curve[2]["dev_score"] and res.last_score == res.curve[-1]["dev_score"]
    assert all(torch.equal(a, b) for a, b in zip(weights, snapshots[2]))
    assert not all(torch.equal(a, b) for a, b in zip(weights, snapshots[-1]))
    last, w_last = _fit(tmp_path / "last", evaluate=lambda m: 0.0, select_best=None, dropout=0.0)
    assert last.best is None and all(torch.equal(a, b) for a, b in zip(w_last, snapshots[-1]))


def test_select_best_survives_a_resume(tmp_path, one_thread):
    """A run killed after its best evaluation returns, once resumed, the same best weights."""
    scores = iter([1.0, 8.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0] * 2)
    whole, w_whole = _fit(tmp_path / "whole", evaluate=lambda m: next(scores), save_steps=4)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "killed", evaluate=lambda m: next(scores), save_steps=4, die_at=15)
    state = json.loads((tmp_path / "killed" / "trainer_state.json").read_text())
    assert state["best"]["dev_score"] == 8.0 and (tmp_path / "killed" / "best_model.pt").exists()
    rest = iter([2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0][len(state["curve"]) - 2:])
    resumed, w_resumed = _fit(tmp_path / "killed", evaluate=lambda m: next(rest), save_steps=4)
    assert resumed.best == whole.best and resumed.best["dev_score"] == 8.0
    assert all(torch.equal(a, b) for a, b in zip(w_whole, w_resumed))


def test_patience_stops_after_evaluations_without_a_better_one(tmp_path, one_thread):
    scores = iter([1.0, 5.0, 4.0, 3.0, 9.0, 9.0, 9.0, 9.0, 9.0])

    def fit_patient(ckpt, patience):
        x, y, rows = _regression()
        model = torch.nn.Linear(5, 1)
        return fit(model, train_set=rows, collate_fn=_collate, batch_size=8,
                   loss_fn=lambda m, b: torch.nn.functional.mse_loss(m(b["x"]), b["y"]),
                   optimizer=torch.optim.SGD(model.parameters(), lr=0.01), epochs=3, evaluate=lambda m: next(scores),
                   seed=1, ckpt_dir=ckpt, accelerator=make_accelerator(), evals_per_epoch=3, patience=patience)

    res = fit_patient(tmp_path / "a", 2)  # best 5.0 (2nd), then 4.0 and 3.0: stop after the 4th evaluation
    assert [c["dev_score"] for c in res.curve] == [1.0, 5.0, 4.0, 3.0] and res.best["dev_score"] == 5.0
    with pytest.raises(ValueError, match="patience needs select_best"):
        fit_patient(tmp_path / "c", 0)


def test_select_best_rejects_an_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="select_best must be 'max', 'min' or None"):
        _fit(tmp_path / "ck", select_best="best")


# ---- a BiLSTM student killed with SIGKILL mid-epoch --------------------------------------------
_CHILD = textwrap.dedent("""
    import json, sys, time, torch, datasets
    torch.set_num_threads(1)
    from kdnb.training import bilstm as bilstm_training
    from kdnb.config import load_config
    from kdnb.data import load_task
    cfg = load_config("cola", "smoke", overrides=json.loads(sys.argv[1]))
    dsd = load_task("cola", cfg.data_path)
    dsd["dev"], dsd["test"] = dsd["dev"].select(range(64)), dsd["test"].select(range(16))
    real = bilstm_training.logit_loss
    def slow_loss(*a, **k):     # slow steps, so that the kill lands mid-epoch
        kd = real(*a, **k)
        return lambda s, t: time.sleep(0.3) or kd(s, t)
    bilstm_training.logit_loss = slow_loss
    bilstm_training.distill_bilstm(cfg, datasets.load_from_disk(sys.argv[2]), dsd, name="killed")
""")


def _tiny_teacher(cfg):
    """A small random BERT classifier saved where kdnb.models.teacher.load_teacher looks."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kdnb.models.teacher import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(cfg.teacher.model_name_or_path))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=2))
    model.save_pretrained(cfg.out / "teacher" / "model")
    tok.save_pretrained(cfg.out / "teacher" / "model")
    (cfg.out / "teacher" / "result.json").write_text(json.dumps({"config_hash": "tiny"}))


def test_student_killed_mid_epoch_resumes_to_identical_metrics(tmp_path, one_thread, capsys):
    from kdnb.training import bilstm as bilstm_training
    from kdnb.training.teacher import compute_teacher_logits

    over = {"output_dir": str(tmp_path / "out"), "train_limit": 64, "bilstm.epochs": 2, "bilstm.batch_size": 8,
            "bilstm.dropout": 0.1, "bilstm.evals_per_epoch": 2, "bilstm.save_steps": 3}
    cfg = load_config("cola", "smoke", overrides=over)
    _tiny_teacher(cfg)
    dsd = load_task("cola", SHARED_DATA)
    dsd["dev"], dsd["test"] = dsd["dev"].select(range(64)), dsd["test"].select(range(16))
    compute_teacher_logits(cfg, subsample(dsd["train"], 64, cfg.seed), cfg.out / "transfer" / "none", shard_size=64)
    transfer = datasets.load_from_disk(str(cfg.out / "transfer" / "none"))

    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(over), str(cfg.out / "transfer" / "none")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state_file = cfg.out / "students" / "killed" / "checkpoint" / "trainer_state.json"
    deadline = time.time() + 300
    while time.time() < deadline and child.poll() is None and not state_file.exists():
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    state = json.loads(state_file.read_text())
    assert state["epochs_done"] == 0 and state["batches_done"] in (3, 6), "killed after a step checkpoint, mid-epoch"
    assert not (cfg.out / "students" / "killed" / "result.json").exists()

    capsys.readouterr()
    resumed = bilstm_training.distill_bilstm(cfg, transfer, dsd, name="killed")
    assert f"resumed from checkpoint after epoch 0 and {state['batches_done']} batches" in capsys.readouterr().out
    whole = bilstm_training.distill_bilstm(cfg, transfer, dsd, name="whole")
    assert len(whole.curve) == 4  # 2 epochs × 2 evaluations
    assert resumed.curve.to_dict("records") == whole.curve.to_dict("records")
    assert resumed.dev_score == whole.dev_score and resumed.test_score == whole.test_score
    w_resumed = torch.load(cfg.out / "students" / "killed" / "model.pt")
    w_whole = torch.load(cfg.out / "students" / "whole" / "model.pt")
    assert w_resumed.keys() == w_whole.keys()
    assert all(torch.equal(w_resumed[k], w_whole[k]) for k in w_whole)


def test_epoch_seconds_and_cuda_graphs_on_a_cpu(tmp_path, one_thread):
    """fit reports one wall time per trained epoch; cuda_graphs is ignored without a GPU (the
    same weights as without it), and CUDAGraphStep itself refuses to run without one."""
    from kdnb.training.fit import CUDAGraphStep

    x, y, rows = _regression(40)
    weights = []
    for graphs in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 1)
        opt = torch.optim.Adadelta(model.parameters(), capturable=graphs and torch.cuda.is_available())
        res = fit(model, train_set=rows, collate_fn=_collate, batch_size=8,
                  loss_fn=lambda m, b: torch.nn.functional.mse_loss(m(b["x"]), b["y"]), optimizer=opt, epochs=2,
                  evaluate=lambda m: 0.0, seed=1, ckpt_dir=tmp_path / f"g{graphs}", accelerator=make_accelerator(),
                  cuda_graphs=graphs)
        assert len(res.epoch_seconds) == 2 and all(s > 0 for s in res.epoch_seconds)
        assert res.cuda_graphs is None  # no GPU: eager steps, nothing captured
        weights.append(model.weight.detach().clone())
    assert torch.equal(*weights)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA device"):
            CUDAGraphStep(model, lambda m, b: m(b["x"]).sum(), opt)


def test_tensor_learning_rates_follow_the_schedule_in_place(tmp_path, one_thread):
    """What CUDA-graph steps with a scheduler rely on: tensor_learning_rates keeps one tensor per
    group that transformers' linear schedule writes in place, with the rates of the float
    schedule; fit trains with it (a checkpointed run resumed after a kill included) to the float
    run's weights."""
    from transformers import get_linear_schedule_with_warmup

    from kdnb.training.fit import tensor_learning_rates

    def make(tensor: bool):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
        if tensor:
            tensor_learning_rates(opt, "cpu")
        return model, opt, get_linear_schedule_with_warmup(opt, 3, 27)

    _, opt_f, sched_f = make(False)
    _, opt_t, sched_t = make(True)
    lr_tensor = opt_t.param_groups[0]["lr"]
    assert torch.is_tensor(lr_tensor) and lr_tensor.dtype == torch.float32
    for _ in range(10):
        assert opt_t.param_groups[0]["lr"] is lr_tensor  # written in place, never replaced
        assert lr_tensor.item() == pytest.approx(opt_f.param_groups[0]["lr"], rel=1e-6)
        opt_f.step(), opt_t.step(), sched_f.step(), sched_t.step()
    assert 0 < lr_tensor.item() < 0.05  # warmed up, decaying
    from kdnb.training.fit import _restore_tensor_lrs

    opt_t.param_groups[0]["lr"] = 0.0123  # a scheduler that assigns (older PyTorch): fit copies it back
    _restore_tensor_lrs(opt_t, [lr_tensor])
    assert opt_t.param_groups[0]["lr"] is lr_tensor and lr_tensor.item() == pytest.approx(0.0123)

    x, y, rows = _regression(72)  # 9 batches of 8 per epoch, 3 epochs: 27 steps

    def train(tensor: bool, ckpt: Path, die_at=None):
        model, opt, sched = make(tensor)
        calls = [0]

        def loss_fn(m, b):
            calls[0] += 1
            if calls[0] == die_at:
                raise KeyboardInterrupt
            return torch.nn.functional.mse_loss(m(b["x"]), b["y"])

        fit(model, train_set=rows, collate_fn=_collate, batch_size=8, loss_fn=loss_fn, optimizer=opt,
            scheduler=sched, epochs=3, evaluate=lambda m: 0.0, seed=1, ckpt_dir=ckpt, accelerator=make_accelerator(),
            save_steps=4)
        return model.weight.detach().clone(), opt

    w_float, _ = train(False, tmp_path / "f")
    w_tensor, opt = train(True, tmp_path / "t")
    assert torch.is_tensor(opt.param_groups[0]["lr"])
    assert torch.allclose(w_tensor, w_float, atol=1e-6) and not torch.equal(w_tensor, make(False)[0].weight)
    with pytest.raises(KeyboardInterrupt):
        train(True, tmp_path / "k", die_at=15)
    w_resumed, opt = train(True, tmp_path / "k")
    assert torch.is_tensor(opt.param_groups[0]["lr"]) and torch.equal(w_resumed, w_tensor)
