"""Distilling the BiLSTM student (Tang et al. 2019, §3) from the teacher's logits on the transfer set.
"""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd
import torch

from .. import store
from ..config import Config
from ..data import score, task_spec
from ..models.bilstm import (
    PairWordPieceCollate,
    WordPieceCollate,
    build_bilstm,
    token_lengths,
    vocabulary_ids,
)
from ..models.common import count_parameters
from ..store import Run, RunResult, run_dir
from ..utils import atomic_path, get_logger, set_seed
from .fit import fit, make_accelerator, predict_logits, selection_record
from .losses import logit_loss
from .teacher import write_csv, write_predictions


def _bilstm_forward(model, batch: dict) -> torch.Tensor:
    if "input_ids2" in batch:  # sentence pairs: SiameseBiLSTMStudent
        return model(batch["input_ids"], batch["lengths"], batch["input_ids2"], batch["lengths2"])
    return model(batch["input_ids"], batch["lengths"])


def distill_bilstm(
    cfg: Config,
    transfer_set: datasets.Dataset,
    dsd: datasets.DatasetDict,
    name: str = "bilstm",
    force: bool = False,
    group: str = "students",
) -> RunResult:
    """Distil the teacher into a BiLSTM student on ``transfer_set`` (rows with ``teacher_logits``).

    The KD loss is ``bilstm.loss`` on logits (``mse``: Tang et al. 2019 eq. 2); optimiser
    Adadelta (lr ``bilstm.learning_rate``, ρ ``bilstm.rho``), gradient clipping at
    ``bilstm.grad_clip``. Saves ``model.pt``, ``learning_curve.csv``, ``dev_predictions.csv``
    and ``result.json`` under ``<out>/<group>/<name>/`` (:func:`kdnb.store.run_dir`); reuses them when the parameters
    and transfer set match (``force`` redoes), resumes after a kill from the last epoch.
    On a sentence-pair task (``TaskSpec.pair``, e.g. RTE) the student is the
    :class:`SiameseBiLSTMStudent`; with ``bilstm.embedding: word2vec`` it reads words through
    the word tokenizer of :func:`kdnb.models.embeddings.word2vec_embeddings` (saved to ``tokenizer/``).
    """
    from ..models.teacher import load_teacher

    bc = cfg.bilstm
    teacher_key = store.record(cfg).get("config_hash")
    run = Run("bilstm", name, run_dir(cfg, name, group),
              cfg.section_hash("seed", "bilstm") + f"-{teacher_key}-{transfer_set._fingerprint}")
    if saved := run.saved(force):
        return saved
    sdir, key = run.dir, run.key

    set_seed(cfg.seed)
    teacher, tokenizer = load_teacher(cfg)
    num_labels = teacher.config.num_labels
    pair = task_spec(cfg.task).pair  # sentence pairs: the siamese BiLSTM (Tang et al. 2019, §3.2)
    w2v = None
    if bc.embedding == "word2vec":  # word-level vocabulary, tokenizer and vectors (kdnb.models.embeddings)
        from ..models.embeddings import word2vec_embeddings

        w2v = word2vec_embeddings(cfg, transfer_set, force=force)
        tokenizer = w2v.tokenizer
    model = build_bilstm(bc, num_labels, tokenizer, teacher, pair=pair,
                         embedding_weights=None if w2v is None else w2v.weights)
    del teacher
    # CUDA graphs (thesis profile on a GPU): unpacked LSTM (no host sync), lengths padded to
    # multiples of 8 (few graph shapes), a capturable optimiser; the same model and updates
    graphs = cfg.cuda_graphs and torch.cuda.is_available() and bc.gradient_accumulation_steps == 1
    collate = (PairWordPieceCollate if pair else WordPieceCollate)(tokenizer, bc.max_length,
                                                                   pad_to_multiple_of=8 if graphs else 1)
    if bc.embedding_mode != "static":  # exact speed-up: see BiLSTMStudent.compact
        model.compact(vocabulary_ids(tokenizer, [transfer_set, *dsd.values()], bc.max_length))
    model.packed = not graphs
    lengths = token_lengths(tokenizer, transfer_set, bc.max_length) if bc.length_grouped else None
    kd = logit_loss(bc.loss, bc.temperature)
    accelerator = make_accelerator(cfg.mixed_precision, bc.gradient_accumulation_steps)
    optimizer = torch.optim.Adadelta([p for p in model.parameters() if p.requires_grad],
                                     lr=bc.learning_rate, rho=bc.rho, capturable=graphs)
    dev = dsd["dev"]
    dev_labels = np.array(dev["label"])

    def evaluate(m) -> float:
        logits = predict_logits(m, dev, collate, 512, _bilstm_forward, accelerator)
        return score(cfg.task, dev_labels, logits.argmax(-1).numpy())

    sdir.mkdir(parents=True, exist_ok=True)
    fr = fit(model, train_set=transfer_set, collate_fn=collate, batch_size=bc.batch_size,
             loss_fn=lambda m, b: kd(_bilstm_forward(m, b), b["teacher_logits"]), optimizer=optimizer,
             epochs=bc.epochs, evaluate=evaluate, seed=cfg.seed, ckpt_dir=sdir / "checkpoint",
             accelerator=accelerator, evals_per_epoch=bc.evals_per_epoch, grad_clip=bc.grad_clip, lengths=lengths,
             resume_key=key, desc=name, save_steps=bc.save_steps, num_workers=cfg.num_workers, cuda_graphs=graphs)
    if fr.cuda_graphs:
        get_logger().info(f"{name}: CUDA graphs {fr.cuda_graphs}")
    model = accelerator.unwrap_model(model).expand()
    model.packed = True
    with atomic_path(sdir / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    if w2v is not None:  # the word vocabulary the weights index
        with atomic_path(sdir / "tokenizer") as tmp:
            tokenizer.save_pretrained(tmp)
    write_csv(pd.DataFrame(fr.curve), sdir / "learning_curve.csv")
    dev_logits = predict_logits(model, dev, collate, 512, _bilstm_forward, accelerator).numpy()
    write_predictions(dev, dev_logits, sdir / "dev_predictions.csv")
    test_score = None
    if "test" in dsd and min(dsd["test"]["label"]) >= 0:
        test_logits = predict_logits(model, dsd["test"], collate, 512, _bilstm_forward, accelerator).numpy()
        write_predictions(dsd["test"], test_logits, sdir / "test_predictions.csv")
        test_score = score(cfg.task, dsd["test"]["label"], test_logits.argmax(-1))
    return run.finish({
        "model": f"{'siamese ' if pair else ''}BiLSTM (Tang et al. 2019), {bc.loss} loss",
        "embedding": bc.embedding if w2v is None else {"embedding": "word2vec", **w2v.stats},
        "dev_score": score(cfg.task, dev_labels, dev_logits.argmax(-1)),
        "test_score": test_score,
        "n_params": count_parameters(model),
        "seconds": fr.seconds,
        "epoch_seconds": fr.epoch_seconds,
        "transfer_set_size": len(transfer_set),
        **selection_record(fr),
    })
