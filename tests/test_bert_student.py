"""kdnb.training.bert_student: the small BERT student (shapes, E→H projection, init from the teacher),
pair encoding, layer mapping, and tiny smoke-profile distillation runs (written, reused, every
KD method of the ablation)."""

from __future__ import annotations

import dataclasses
import json
import os

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from kdnb import experiments
from kdnb.config import load_config
from kdnb.data import load_task, subsample
from kdnb.errors import ConfigError
from kdnb.models import bert_inputs, common
from kdnb.models import bert_student as BM
from kdnb.models.teacher import resolve_model_path
from kdnb.training import bert_student as BT
from kdnb.training import losses

TINY = {"bert_student.num_layers": 2, "bert_student.hidden_size": 16, "bert_student.intermediate_size": 32,
        "bert_student.num_heads": 2, "bert_student.epochs": 2, "bert_student.warmup_epochs": 0.5,
        "bert_student.batch_size": 16, "bert_student.max_length": 32, "bert_student.eval_batch_size": 256,
        "kd_ablation.ta_num_layers": 2, "kd_ablation.ta_hidden_size": 24, "kd_ablation.ta_intermediate_size": 48,
        "kd_ablation.ta_num_heads": 2}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path(load_config("cola", "smoke").teacher.model_name_or_path))


@pytest.fixture(scope="module")
def dsd():
    return load_task("cola", load_config("cola", "smoke").data_path)


def _teacher(vocab: int, hidden=32, layers=3, heads=4, intermediate=64, seed=0):
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                                    num_attention_heads=heads, intermediate_size=intermediate,
                                                    num_labels=2)).eval()


# ---- the model ----------------------------------------------------------------------------------
def test_shapes_and_the_projected_teacher_embeddings():
    torch.manual_seed(0)
    w = torch.randn(50, 8)
    m = BM.BertStudent(w, num_labels=3, num_layers=2, hidden_size=12, intermediate_size=20, num_heads=3,
                      dropout=0.0).eval()
    ids = torch.randint(1, 50, (4, 7))
    out = m(ids, torch.ones(4, 7, dtype=torch.long), output_hidden_states=True)
    assert out.logits.shape == (4, 3)
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape == (4, 7, 12)
    # the input embeddings are the teacher's V×E rows through a linear map E → H
    assert torch.equal(m.embeddings.word.weight, w) and m.embeddings.projection.weight.shape == (12, 8)
    want = w[ids] @ m.embeddings.projection.weight.T + m.embeddings.projection.bias
    assert torch.allclose(m.embeddings(ids), want, atol=1e-6)
    # BERT's own word table is replaced (one V×E matrix in the model), position/type embeddings apply
    assert m.bert.get_input_embeddings() is m.embeddings
    assert sum(p.numel() for p in m.parameters() if p.shape == (50, 8)) == 50 * 8
    swapped = ids.clone()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]
    assert not torch.allclose(m(ids).logits, m(swapped).logits)  # order matters: position embeddings
    static = BM.BertStudent(w, 2, 1, 12, 20, 3, trainable_embeddings=False)
    assert not static.embeddings.word.weight.requires_grad and static.embeddings.projection.weight.requires_grad
    with pytest.raises(ValueError, match="multiple of num_heads"):
        BM.BertStudent(w, 2, 1, 10, 20, 3)


def test_thesis_student_has_the_thesis_parameter_count():
    # Sučík (2020): L=5, H=204, I=750, A=3 → 2.42M parameters outside the embeddings
    m = BM.BertStudent(torch.zeros(30522, 384), num_labels=2)
    per_layer = 4 * (204 * 204 + 204) + (204 * 750 + 750) + (750 * 204 + 204) + 2 * 2 * 204
    assert m.non_embedding_parameters() == 5 * per_layer + (204 * 204 + 204) + (204 * 2 + 2)
    assert round(m.non_embedding_parameters() / 1e6, 2) == 2.42


def test_init_from_teacher_copies_the_first_layers(tokenizer):
    teacher = _teacher(len(tokenizer), hidden=32, layers=3, heads=4, intermediate=64)
    bc = load_config("cola", "smoke", overrides={"bert_student.num_layers": 2, "bert_student.hidden_size": 32,
                                                 "bert_student.intermediate_size": 64, "bert_student.num_heads": 4,
                                                 "bert_student.init": "teacher"}).bert_student
    student = BM.build_bert_student(bc, 2, teacher).eval()
    for k in range(2):
        ts, ss = teacher.bert.encoder.layer[k].state_dict(), student.bert.bert.encoder.layer[k].state_dict()
        assert ts.keys() == ss.keys() and all(torch.equal(ts[n], ss[n]) for n in ts)
    assert torch.equal(student.bert.bert.pooler.dense.weight, teacher.bert.pooler.dense.weight)
    # identity projection: the student's layer-2 states are the teacher's layer-2 states
    enc = tokenizer(["the cat sat on the mat .", "a dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        th = teacher(**enc, output_hidden_states=True).hidden_states
        sh = student(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], output_hidden_states=True)
    assert torch.allclose(sh.hidden_states[2], th[2], atol=1e-5)
    assert torch.allclose(sh.hidden_states[0], th[0], atol=1e-5)
    # random init differs; sizes other than the teacher's are refused, naming the key
    fresh = BM.build_bert_student(dataclasses.replace(bc, init="random"), 2, teacher)
    assert not torch.equal(fresh.bert.bert.encoder.layer[0].attention.self.query.weight,
                           teacher.bert.encoder.layer[0].attention.self.query.weight)
    with pytest.raises(ConfigError, match="bert_student.init"):
        BM.build_bert_student(dataclasses.replace(bc, hidden_size=16, num_heads=2, intermediate_size=32), 2, teacher)


def test_layer_map_is_the_uniform_skip_mapping():
    assert common.layer_map(5, 6) == [1, 2, 4, 5, 6]
    assert common.layer_map(5, 6, include_last=False) == [1, 2, 4, 5]
    assert common.layer_map(6, 12) == [2, 4, 6, 8, 10, 12]      # PKD-Skip
    assert common.layer_map(3, 3) == [1, 2, 3]
    assert common.layer_map(4, 6) == [2, 3, 5, 6]           # 1.5 and 4.5: halves round up
    assert common.layer_map(4, 6, include_last=False) == [2, 3, 5]
    assert common.layer_map(9, 6)[:2] == [1, 1]             # deeper than the teacher: many-to-one
    with pytest.raises(ValueError, match="teacher layers"):
        common.layer_map(0, 6)


def test_collate_encodes_pairs_with_token_types(tokenizer):
    rows = [{"sentence": "A man sleeps.", "sentence2": "Someone rests.", "label": 0, "teacher_logits": [1.0, 0.0]},
            {"sentence": "Hi.", "sentence2": "Bye.", "label": -1, "teacher_logits": [0.0, 1.0]}]
    b = bert_inputs.BertCollate(tokenizer, 64)(rows)
    ids, types = b["input_ids"][0].tolist(), b["token_type_ids"][0].tolist()
    assert ids[0] == tokenizer.cls_token_id and ids.count(tokenizer.sep_token_id) == 2
    second = ids.index(tokenizer.sep_token_id) + 1                 # [CLS] a [SEP] | b [SEP]
    assert set(types[:second]) == {0} and set(types[second:sum(b["attention_mask"][0].tolist())]) == {1}
    assert b["labels"].tolist() == [0, -1] and b["teacher_logits"].shape == (2, 2)
    single = bert_inputs.BertCollate(tokenizer, 4)([{"sentence": "one two three four five six"}])
    assert single["input_ids"].shape == (1, 4) and "labels" not in single  # truncated to max_length




@pytest.mark.parametrize("pad", [None, 8])
def test_pretokenised_rows_give_the_batches_of_their_sentences(tokenizer, pad):
    """Training rows are tokenised once (pretokenise, datasets.map) and only padded per batch:
    the same tensors as tokenising the sentences in the collate, pairs and truncation included."""
    ds = datasets.Dataset.from_dict({
        "sentence": ["A man sleeps on the sofa.", "Hi.", "one two three four five six seven eight nine ten"],
        "sentence2": ["Someone rests.", "Bye now.", "x"], "label": [0, -1, 1],
        "teacher_logits": [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]})
    for data in (ds, ds.remove_columns("sentence2")):
        pre = bert_inputs.pretokenise(data, tokenizer, 12)
        assert "sentence" not in pre.column_names and pre["length"] == [len(x) for x in pre["input_ids"]]
        collate = bert_inputs.BertCollate(tokenizer, 12, pad_to_multiple_of=pad)
        want, got = collate([data[i] for i in range(3)]), collate([pre[i] for i in range(3)])
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want), data.column_names
        texts = [list(data["sentence"])] + ([list(data["sentence2"])] if "sentence2" in data.column_names else [])
        hf = tokenizer(*texts, truncation=True, max_length=12, padding=True, return_tensors="pt",
                       return_token_type_ids=True)  # transformers' own padding, to the longest
        width = hf["input_ids"].shape[1]
        assert got["input_ids"].shape[1] == (width if pad is None else -(-width // 8) * 8)
        assert all(torch.equal(got[k][:, :width], hf[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
        assert max(pre["length"]) == 12  # truncated to max_length
    with pytest.raises(ValueError, match="no 'sentence' column.*'text'"):
        bert_inputs.pretokenise(ds.rename_column("sentence", "text"), tokenizer, 12)

def test_graph_collate_pads_to_multiples_and_its_4d_mask_gives_the_same_logits(tokenizer):
    """The CUDA-graph collate (lengths rounded up to 8, a (B, 1, 1, T) bool mask that SDPA takes
    as it is) scores a batch exactly as the plain one (2-D mask, padded to the longest)."""
    rows = [{"sentence": s} for s in ("The cat sat.", "A much longer sentence with quite a few more words in it.",
                                      "Dogs bark loudly at night .")]
    plain = bert_inputs.BertCollate(tokenizer, 64)(rows)
    graph = bert_inputs.BertCollate(tokenizer, 64, pad_to_multiple_of=8, mask_4d=True)(rows)
    t = plain["input_ids"].shape[1]
    assert t % 8 and graph["input_ids"].shape[1] == -(-t // 8) * 8  # 15 → 16 (say): rounded up
    assert graph["attention_mask"].dtype == torch.bool and graph["attention_mask"].shape == (3, 1, 1, -(-t // 8) * 8)
    assert torch.equal(graph["attention_mask"][:, 0, 0, :t], plain["attention_mask"].bool())
    torch.manual_seed(0)
    m = BM.BertStudent(torch.randn(len(tokenizer), 8), num_labels=2, num_layers=2, hidden_size=12,
                      intermediate_size=20, num_heads=3).eval()
    with torch.no_grad():
        want = m(plain["input_ids"], plain["attention_mask"], plain["token_type_ids"]).logits
        got = m(graph["input_ids"], graph["attention_mask"], graph["token_type_ids"]).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(want[0], want[1])  # real, different rows


# ---- distillation runs (smoke profile, a tiny random teacher) -----------------------------------
def _setup(tmp_path, tokenizer, dsd, **over):
    cfg = load_config("cola", "smoke", overrides={"output_dir": str(tmp_path / "out"), **TINY, **over})
    teacher = _teacher(len(tokenizer))
    mdir = cfg.out / "teacher" / "model"
    teacher.save_pretrained(mdir)
    tokenizer.save_pretrained(mdir)
    (cfg.out / "teacher" / "result.json").write_text(json.dumps({"config_hash": "tiny", "dev_score": 0.25}))
    train = subsample(dsd["train"], 48, 0)
    logits = np.random.default_rng(0).normal(size=(48, 2)).astype(np.float32)
    transfer = train.add_column("teacher_logits", logits.tolist(), feature=datasets.Sequence(datasets.Value("float32")))
    small = datasets.DatasetDict({"train": train, "dev": subsample(dsd["dev"], 40, 0)})
    return cfg, transfer, small


def test_distill_bert_student_writes_and_reuses(tmp_path, tokenizer, dsd, one_thread):
    cfg, transfer, small = _setup(tmp_path, tokenizer, dsd)
    res = BT.distill_bert_student(cfg, transfer, small)
    sdir = cfg.out / "students" / "bert_student"
    saved = json.loads((sdir / "result.json").read_text())
    assert not res.reused and saved["dev_score"] == res.dev_score and saved["method"] is None
    assert saved["sizes"] == {"num_layers": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2}
    assert list(res.curve["epoch"]) == [1.0, 2.0] and len(pd.read_csv(sdir / "dev_predictions.csv")) == 40
    assert not (sdir / "checkpoint").exists()
    mtime = os.path.getmtime(sdir / "model.pt")
    again = BT.distill_bert_student(cfg, transfer, small)
    assert again.reused and again.dev_score == res.dev_score and os.path.getmtime(sdir / "model.pt") == mtime
    # the saved weights load back and give the recorded dev predictions
    model = BT.load_bert_student(cfg, "bert_student")
    batch = bert_inputs.BertCollate(tokenizer, 32)([small["dev"][i] for i in range(40)])
    with torch.no_grad():
        pred = bert_inputs.logits(model, batch).argmax(-1).numpy()
    assert (pred == pd.read_csv(sdir / "dev_predictions.csv")["prediction"].to_numpy()).all()
    # another temperature is another run
    cfg2 = load_config("cola", "smoke", overrides={"output_dir": str(tmp_path / "out"), **TINY,
                                                   "bert_student.temperature": 1.0})
    assert not BT.distill_bert_student(cfg2, transfer, small).reused


def test_kd_ablation_runs_every_method_and_writes_the_table(tmp_path, tokenizer, dsd, one_thread):
    cfg, transfer, small = _setup(tmp_path, tokenizer, dsd, **{"kd_ablation.aguilar_schedule": "progressive"})
    main = BT.distill_bert_student(cfg, transfer, small)
    from kdnb.store import RunResult

    bilstm = RunResult("bilstm", "bilstm", tmp_path, {"dev_score": 0.1, "test_score": None, "n_params": 1_000_000,
                                                      "seconds": 12.0}, pd.DataFrame(), True)
    table = experiments.kd_ablation(cfg, transfer, small, done=main, bilstm=bilstm)
    # the BiLSTM's row first, with its own loss (bilstm.loss: mse_sum, Tang et al. 2019 eq. 2)
    assert list(table["method"]) == ["mse_sum", "mse", "kl", "alpha_mix", "pkd", "aguilar", "noisy", "ta"]
    assert table["student"].iloc[0].startswith("BiLSTM") and table["retention (%)"].iloc[0] == 40.0  # 0.1 / 0.25
    table = table.iloc[1:].reset_index(drop=True)
    assert table.set_index("method").loc["kl", "dev MCC (%)"] == round(100 * main.dev_score, 1)
    assert not (cfg.out / "students" / "bert_kd_kl").exists()          # the BERT student run is the kl row
    for m in ("mse", "alpha_mix", "pkd", "aguilar", "noisy", "ta", "ta_assistant"):
        assert (cfg.out / "students" / f"bert_kd_{m}" / "result.json").is_file(), m
    ta = json.loads((cfg.out / "students" / "bert_kd_ta_assistant" / "result.json").read_text())
    assert ta["sizes"]["hidden_size"] == 24                             # the assistant has the ta_* sizes
    assert table.set_index("method").loc["ta", "train time (s)"] >= round(ta["seconds"], 1)
    # the distinct objectives really differ: the students' losses are not all the same curve
    losses = {m: pd.read_csv(cfg.out / "students" / f"bert_kd_{m}" / "learning_curve.csv")["train_loss"].iloc[0]
              for m in ("mse", "alpha_mix", "pkd", "aguilar")}
    assert len({round(v, 6) for v in losses.values()}) == 4
    # reused on the second call
    again = experiments.kd_ablation(cfg, transfer, small, done=main)
    assert again.equals(table) and list(pd.read_csv(cfg.out / "kd_ablation.csv")["method"])[0] == "mse"


def test_objectives_use_the_teacher_internals(tokenizer):
    cfg = load_config("cola", "smoke", overrides={**TINY, "kd_ablation.pkd_beta": 0.0, "kd_ablation.alpha": 1.0})
    teacher = _teacher(len(tokenizer)).requires_grad_(False)
    teacher.set_attn_implementation("eager")
    bc = cfg.bert_student
    student = BM.build_bert_student(bc, 2, teacher, "eager").eval()
    rows = [{"sentence": s, "teacher_logits": [0.5, -0.5], "label": 1} for s in ("a b c", "the cat sat down")]
    batch = bert_inputs.BertCollate(tokenizer, 32)(rows)
    pkd_model = BM.DistillationModel(student, [1], 32)
    assert len(pkd_model.maps) == 1 and pkd_model.maps[0].in_features == 16 and pkd_model.maps[0].out_features == 32
    pkd = BT.make_objective(cfg, "pkd", teacher, student_layers=2)(pkd_model, batch)
    kl = BT.make_objective(cfg, "kl")(pkd_model, batch)
    assert pkd.item() == pytest.approx(kl.item(), rel=1e-5)             # α = 1, β = 0: PKD is KL·T²
    cfg_b = load_config("cola", "smoke", overrides={**TINY, "kd_ablation.pkd_beta": 10.0, "kd_ablation.alpha": 1.0})
    assert BT.make_objective(cfg_b, "pkd", teacher, student_layers=2)(pkd_model, batch).item() > kl.item()
    # Aguilar: in the first stage only layer 1's internal terms count, no logit term
    ag_model = BM.DistillationModel(student, [1, 2], 32)
    ag = BT.make_objective(cfg, "aguilar", teacher, progress=lambda: 0.0, student_layers=2)
    first = ag(ag_model, batch)
    out = ag_model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], hidden=True, attentions=True)
    t = teacher(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                output_hidden_states=True, output_attentions=True)

    want = (losses.attention_kl(out["attentions"][:1], torch.stack(t.attentions[1:2]), batch["attention_mask"])
            + losses.cls_cosine(out["cls"][:1], t.hidden_states[2][:, 0].unsqueeze(0)))
    assert first.item() == pytest.approx(want.item(), rel=1e-5)         # layer 1 ↔ teacher layer round(1·3/2) = 2
    # progressive, after the layer stages: the logit loss alone (and no teacher pass)
    cfg_s = load_config("cola", "smoke", overrides={**TINY, "kd_ablation.aguilar_schedule": "progressive"})
    late = BT.make_objective(cfg_s, "aguilar", teacher, progress=lambda: 0.99, student_layers=2)(ag_model, batch)
    assert late.item() == pytest.approx(BT.make_objective(cfg_s, None)(ag_model, batch).item(), rel=1e-6)


def test_aguilar_rows_are_labelled_by_the_schedule_that_ran():
    stacked = load_config("cola", "kdzoo")
    assert stacked.kd_ablation.aguilar_schedule == "stacked"  # what the params run
    assert "stacked (SID)" in BT.method_label("aguilar", stacked) and "progressive" not in BT.method_label("aguilar", stacked)
    prog = load_config("cola", "kdzoo", overrides={"kd_ablation.aguilar_schedule": "progressive"})
    assert "progressive (PID)" in BT.method_label("aguilar", prog)
    assert BT.method_label("kl", prog) == BT.METHODS["kl"]


# ---- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize("over, msg", [
    ({"bert_student.hidden_size": 100, "bert_student.num_heads": 3}, "multiple of bert_student.num_heads"),
    ({"bert_student.init": "pretrained"}, "bert_student.init"),
    ({"bert_student.loss": "l1"}, "bert_student.loss"),
    ({"bert_student.warmup_epochs": 70}, "bert_student.warmup_epochs"),
    ({"bert_student.colour": 1}, "unknown key 'bert_student.colour'"),
    ({"kd_ablation.methods": ["mse", "mse"]}, "kd_ablation.methods"),
    ({"kd_ablation.methods": ["dropout"]}, "kd_ablation.methods"),
    ({"kd_ablation.alpha": 1.5}, "kd_ablation.alpha"),
    ({"kd_ablation.aguilar_schedule": "random"}, "kd_ablation.aguilar_schedule"),
    ({"kd_ablation.noise_sigma": -0.1}, "kd_ablation.noise_sigma"),
    ({"kd_ablation.ta_hidden_size": 100, "kd_ablation.ta_num_heads": 3}, "kd_ablation.ta_hidden_size"),
])
def test_bad_bert_student_and_ablation_keys_are_rejected(over, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config("cola", "cpu", overrides=over)


def test_thesis_values_and_the_kdzoo_profile():
    for task in ("cola", "sst2", "sara"):
        t = load_config(task, "thesis").bert_student
        assert (t.num_layers, t.hidden_size, t.intermediate_size, t.num_heads) == (5, 204, 750, 3)
        assert (t.loss, t.temperature, t.learning_rate, t.batch_size, t.epochs, t.warmup_epochs, t.max_length) == \
            ("ce", 3.0, 5e-4, 256, 60, 10.0, 128)
        cpu_student = load_config(task, "cpu").bert_student
        # on in every task's cpu report: the teacher's first layers (CoLA and Sara 3, SST-2 2) on the α-mix
        assert cpu_student.enabled and (cpu_student.init, cpu_student.method, cpu_student.num_layers) == \
            ("teacher", "alpha_mix", 2 if task == "sst2" else 3)
    zoo, cpu = load_config("cola", "kdzoo"), load_config("cola", "cpu")
    assert zoo.kd_ablation.enabled and zoo.bert_student.enabled and set(zoo.kd_ablation.methods) == \
        {"mse", "kl", "alpha_mix", "pkd", "aguilar", "noisy", "ta"}
    # kdzoo extends cpu: same outputs, teacher, transfer set and BiLSTM (all reused)
    assert zoo.out == cpu.out
    assert zoo.section_hash("task", "seed", "train_limit", "teacher", "augment", "bilstm") == \
        cpu.section_hash("task", "seed", "train_limit", "teacher", "augment", "bilstm")


def test_teacher_fidelity_from_the_saved_predictions(tmp_path):
    cfg = load_config("cola", "smoke", overrides={"output_dir": str(tmp_path)})
    ln3 = float(np.log(3))
    # teacher: p = (3/4, 1/4) and (1/2, 1/2); student: (1/2, 1/2) twice
    t = pd.DataFrame({"idx": [0, 1], "label": [0, 1], "prediction": [0, 1], "logit_0": [ln3, 0.0], "logit_1": [0.0, 0.0]})
    s = pd.DataFrame({"idx": [0, 1], "label": [0, 1], "prediction": [0, 0], "logit_0": [0.0, 0.0], "logit_1": [0.0, 0.0]})
    assert BT.teacher_fidelity(cfg, "s") is None                          # no prediction files yet
    (cfg.out / "teacher").mkdir(parents=True)
    (cfg.out / "students" / "s").mkdir(parents=True)
    t.to_csv(cfg.out / "teacher" / "dev_predictions.csv", index=False)
    s.to_csv(cfg.out / "students" / "s" / "dev_predictions.csv", index=False)
    agreement, kl = BT.teacher_fidelity(cfg, "s")
    assert agreement == 0.5                                              # same class on 1 of 2 sentences
    assert kl == pytest.approx((0.75 * np.log(1.5) + 0.25 * np.log(0.5)) / 2, rel=1e-6)  # KL(3/4,1/4 ‖ 1/2,1/2), 0


def test_the_summed_logit_mse_objective_is_c_times_the_mean(tokenizer):
    """``bert_student.loss: mse_sum`` (Tang et al. 2019 eq. 2 as written) is the squared error
    summed over the C classes: C times ``mse`` on the same student and batch, by hand too."""
    teacher = _teacher(len(tokenizer)).requires_grad_(False)
    rows = [{"sentence": s, "teacher_logits": [2.0, -1.0, 0.5], "label": -1} for s in ("a b c", "the cat sat")]
    batch = bert_inputs.BertCollate(tokenizer, 32)(rows)
    losses = {}
    for loss in ("mse", "mse_sum"):
        cfg = load_config("cola", "smoke", overrides={**TINY, "bert_student.loss": loss, "bert_student.method": None})
        torch.manual_seed(0)
        model = BM.DistillationModel(BM.build_bert_student(cfg.bert_student, 3, teacher).eval(), [], 32)
        losses[loss] = BT.make_objective(cfg, None)(model, batch).item()
        z = bert_inputs.logits(model, batch).detach()
    by_hand = ((z - torch.tensor([[2.0, -1.0, 0.5]] * 2)) ** 2).sum(-1).mean().item()
    assert losses["mse_sum"] == pytest.approx(by_hand, rel=1e-5)
    assert losses["mse_sum"] == pytest.approx(3 * losses["mse"], rel=1e-5)


def test_kd_ablation_reuses_the_bert_student_run_for_the_method_it_ran(tmp_path, tokenizer, dsd, one_thread):
    cfg, transfer, small = _setup(tmp_path, tokenizer, dsd, **{"kd_ablation.methods": ["alpha_mix", "mse"]})
    main = BT.distill_bert_student(cfg, transfer, small, method="alpha_mix")
    table = experiments.kd_ablation(cfg, transfer, small, done=main).set_index("method")
    assert not (cfg.out / "students" / "bert_kd_alpha_mix").exists()    # the BERT student run is that row
    assert table.loc["alpha_mix", "dev MCC (%)"] == round(100 * main.dev_score, 1)
    assert "(the BERT student run)" in table.loc["alpha_mix", "objective"]
    assert (cfg.out / "students" / "bert_kd_mse" / "result.json").is_file()  # another method still trains
