"""End-to-end behaviour on tiny data: teacher → logits → BiLSTM, resume, and the CLI's errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from kdnb import report
from kdnb.config import PROJECT_ROOT, load_config
from kdnb.data import load_task, subsample
from kdnb.pipeline import main
from kdnb.training import bilstm as bilstm_training
from kdnb.training.bilstm import distill_bilstm
from kdnb.training.teacher import compute_teacher_logits, fine_tune_teacher

from .conftest import SHARED_DATA, fake_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A teacher fine-tuned on 32 CoLA sentences and its transfer set (smoke profile)."""
    out = tmp_path_factory.mktemp("run")
    cfg = load_config("cola", "smoke", overrides={"output_dir": str(out), "train_limit": 32,
                                                  "teacher.evals_per_epoch": 1})
    dsd = load_task("cola", SHARED_DATA)
    dsd["dev"] = dsd["dev"].select(range(64))
    dsd["test"] = dsd["test"].select(range(16))
    result = fine_tune_teacher(cfg, dsd)
    transfer = compute_teacher_logits(cfg, subsample(dsd["train"], 32, cfg.seed), out / "transfer" / "none",
                                      shard_size=10)
    return cfg, dsd, result, transfer


def test_teacher_outputs(trained):
    cfg, dsd, result, transfer = trained
    tdir = cfg.out / "teacher"
    assert (tdir / "model" / "config.json").exists() and not result.reused
    assert list(result.curve.columns) == ["step", "epoch", "train_loss", "dev_score"]
    assert len(result.curve) == 1 and result.curve["epoch"].iloc[-1] == 1.0
    assert -1.0 <= result.dev_score <= 1.0 and result.n_params > 20_000_000
    sub = (tdir / "test_predictions.tsv").read_text().splitlines()
    assert sub[0] == "index\tprediction" and len(sub) == 17 and sub[1].split("\t")[1] in ("0", "1")
    preds = (tdir / "dev_predictions.csv").read_text().splitlines()
    assert preds[0] == "idx,label,prediction,logit_0,logit_1" and len(preds) == 65
    # a second call with the same parameters reuses the saved teacher
    assert fine_tune_teacher(cfg, dsd).reused


def test_transfer_set_has_teacher_logits_in_shards(trained):
    cfg, dsd, result, transfer = trained
    logits = np.asarray(transfer["teacher_logits"])
    assert len(transfer) == 32 and logits.shape == (32, 2)
    assert not (cfg.out / "transfer" / "none.shards").exists()  # shards merged and removed
    # the stored logits are the teacher's predictions: argmax agrees with a fresh computation
    again = compute_teacher_logits(cfg, transfer.remove_columns("teacher_logits"), cfg.out / "transfer" / "again",
                                   shard_size=32)
    np.testing.assert_allclose(np.asarray(again["teacher_logits"]), logits, atol=1e-5)


def test_bilstm_kill_and_resume_gives_identical_results(trained, monkeypatch):
    cfg, dsd, _, transfer = trained
    cfg.bilstm.epochs = 3
    full = distill_bilstm(cfg, transfer, dsd, name="uninterrupted")

    

    real_score, calls = bilstm_training.score, {"n": 0}

    def dying_score(*a, **k):  # the 2nd evaluation happens in epoch 2, after epoch 1's checkpoint
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real_score(*a, **k)

    monkeypatch.setattr(bilstm_training, "score", dying_score)
    with pytest.raises(KeyboardInterrupt):
        distill_bilstm(cfg, transfer, dsd, name="resumed")
    assert (cfg.out / "students" / "resumed" / "checkpoint" / "trainer_state.json").exists()
    monkeypatch.setattr(bilstm_training, "score", real_score)
    resumed = distill_bilstm(cfg, transfer, dsd, name="resumed")
    assert resumed.curve.to_dict("records") == full.curve.to_dict("records")
    assert resumed.dev_score == full.dev_score


def test_metrics_json_and_retention(trained):
    cfg = trained[0]
    fake_run(cfg, "teacher", "teacher", n_params=100, dev_score=0.5, seconds=12.345)
    fake_run(cfg, "bilstm", "bilstm", n_params=10, dev_score=0.2)
    m = report.write_metrics(cfg)
    assert m["models"]["bilstm"]["retention"] == pytest.approx(0.4)
    saved = json.loads((cfg.out / "metrics.json").read_text())
    assert saved["stages_seconds"]["teacher_fine_tuning"] == 12.35 and saved["metric"] == "mcc"
    table = report.results_table(cfg)
    assert table.loc[table.model == "teacher", "thesis dev (%)"].item() == 59.9


def _out_after(tmp_path):
    return [p for p in tmp_path.rglob("*") if "data" not in p.relative_to(tmp_path).parts]


@pytest.mark.parametrize("argv, message", [
    (["--task", "colla"], "unknown task 'colla'"),
    (["--task", "cola", "--profile", "laptop"], "unknown profile 'laptop'"),
    (["--task", "cola", "--set", "teacher.epoch=3"], "unknown key 'teacher.epoch'"),
    (["--task", "cola", "--data-dir", "/nonexistent/data"], "data directory /nonexistent/data not found"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(argv, message, tmp_path, capsys):
    rc = main(argv + ["--set", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.startswith("kdnb: error:") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_corrupted_tsv_line(data_copy, tmp_path, capsys):
    lines = (data_copy / "cola" / "train.tsv").read_text().splitlines()
    lines[99] = "broken line without tabs"
    (data_copy / "cola" / "train.tsv").write_text("\n".join(lines) + "\n")
    rc = main(["--task", "cola", "--profile", "smoke", "--data-dir", str(data_copy),
               "--set", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "cola/train.tsv, line 100: expected 4 tab-separated columns" in err
    assert not (tmp_path / "out").exists()


def test_cli_as_a_subprocess():
    proc = subprocess.run([sys.executable, "-m", "kdnb.pipeline", "--task", "nope"], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=120)
    assert proc.returncode == 2 and "unknown task 'nope'" in proc.stderr


def test_a_checkpoint_of_other_parameters_is_not_resumed(trained):
    cfg, dsd, _, transfer = trained
    ckpt = cfg.out / "students" / "stale" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"epochs_done": 1, "curve": [], "resume_key": "other"}))
    result = distill_bilstm(cfg, transfer, dsd, name="stale")  # would fail loading the missing state
    assert len(result.curve) == cfg.bilstm.epochs and not ckpt.exists()


def test_executed_notebooks_keep_results_but_not_progress_bars():
    import nbformat

    from kdnb.pipeline import strip_progress

    def stream(name, text):
        return nbformat.v4.new_output("stream", name=name, text=text)

    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [
        stream("stderr", "/x/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update jupyter\n"
                         "  from .autonotebook import tqdm as notebook_tqdm\n"),
        stream("stderr", "\rbilstm epoch 1/3:   0%|          | 0/770 [00:00<?, ?it/s]"),
        stream("stderr", "\rbilstm epoch 1/3:  50%|#####     | 385/770 [00:30<00:30, 12.8it/s]\n"
                         "UserWarning: a real warning\n"),
        stream("stdout", "[kdnb] bilstm: dev 0.218\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "0.218"}, execution_count=1),
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# x"), cell])
    assert strip_progress(nb) == 2
    texts = [o.get("text") for o in cell.outputs]
    assert texts == ["UserWarning: a real warning\n", "[kdnb] bilstm: dev 0.218\n", None]
    assert cell.outputs[-1]["data"]["text/plain"] == "0.218"
    assert strip_progress(nb) == 0  # nothing left to strip
