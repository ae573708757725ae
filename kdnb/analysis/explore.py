"""The explore profile's searches (optuna): BiLSTM and BERT-student size maps, embedding modes.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ..config import Config, EmbeddingMode, EmbeddingType


def study_path(cfg: Config) -> Path:
    """The SQLite file of the optuna study: ``<out>/optuna.db``."""
    return cfg.out / "optuna.db"


WIDTHS = (0.25, 0.5, 1.0, 2.0)
"""Width scalings W of the BiLSTM (hidden = 300·W, fc = 400·W), as in the thesis' size maps."""


def explore_bilstm(cfg: Config, transfer, dsd, n_trials: Optional[int] = None, timeout_s: Optional[float] = None):
    """Explore the BiLSTM student's hyperparameters with optuna (TPE sampler, seed ``cfg.seed``).

    The thesis (Sučík 2020, §"General hyperparameter exploration" and §"Choosing student size")
    explored learning rate, batch size, embedding type and mode, and student width/depth; this
    samples, for our one-layer BiLSTM trained with Adadelta as in notebook 04:

    * ``learning_rate`` ∈ [0.05, 2] (log scale), ``batch_size`` ∈ {32, 50, 128, 256};
    * ``embedding`` ∈ {teacher_wordpiece, random} and ``embedding_mode`` ∈ {non-static, multichannel};
    * ``width`` W ∈ :data:`WIDTHS` (hidden 300·W, fc 400·W).

    Each trial distils for ``analysis.optuna_epochs`` epochs on ``transfer`` and is scored by its
    best dev score over the evaluations (the thesis keeps the best checkpoint). Trials are saved
    under ``<out>/optuna/trial-NNN/`` (without the model weights) and the study in the SQLite
    file :func:`study_path`, so a killed run resumes: completed trials are kept and only the
    missing ones (up to ``n_trials`` completed, default ``analysis.optuna_trials``) are run.

    Returns:
        The ``optuna.Study``.
    """
    import dataclasses
    import logging

    import optuna

    from ..training.bilstm import distill_bilstm

    n_trials = cfg.analysis.optuna_trials if n_trials is None else n_trials
    timeout_s = cfg.analysis.optuna_timeout_s if timeout_s is None else timeout_s
    cfg.out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(study_name=f"bilstm-{cfg.task}", storage=f"sqlite:///{study_path(cfg)}",
                                direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=cfg.seed))

    def objective(trial: "optuna.Trial") -> float:
        width = trial.suggest_categorical("width", list(WIDTHS))
        bc = dataclasses.replace(
            cfg.bilstm,
            learning_rate=trial.suggest_float("learning_rate", 0.05, 2.0, log=True),
            batch_size=trial.suggest_categorical("batch_size", [32, 50, 128, 256]),
            embedding=trial.suggest_categorical("embedding", ["teacher_wordpiece", "random"]),
            embedding_mode=trial.suggest_categorical("embedding_mode", ["non-static", "multichannel"]),
            hidden_size=max(1, round(300 * width)), fc_size=max(1, round(400 * width)),
            epochs=cfg.analysis.optuna_epochs)
        tcfg = dataclasses.replace(cfg, bilstm=bc)
        res = distill_bilstm(tcfg, transfer, dsd, name=f"trial-{trial.number:03d}", group="optuna")
        return _finish_trial(trial, res, cfg.out / "optuna" / f"trial-{trial.number:03d}")

    return _optimize(study, objective, n_trials, timeout_s)


def _finish_trial(trial, res, trial_dir: Path) -> float:
    """Drop the trial's weights, keep its sizes, scores and time as user attributes, and return
    its objective: the best dev score of its learning curve (the thesis keeps the best checkpoint)."""
    (trial_dir / "model.pt").unlink(missing_ok=True)
    trial.set_user_attr("final_dev", res.dev_score)
    trial.set_user_attr("n_params", res.n_params)
    if res.record.get("n_params_non_embedding") is not None:
        trial.set_user_attr("n_params_non_embedding", res.record["n_params_non_embedding"])
    trial.set_user_attr("seconds", res.seconds)
    return float(res.curve["dev_score"].max())


def _optimize(study, objective, n_trials: int, timeout_s: Optional[float]):
    """Run the trials still missing for ``n_trials`` completed ones (a resumed study keeps its own)."""
    import optuna

    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if n_trials > done:
        study.optimize(objective, n_trials=n_trials - done, timeout=timeout_s, gc_after_trial=True)
    return study


def bert_num_heads(hidden_size: int) -> int:
    """The attention heads ``A`` of a BERT student of width ``H``: the divisor of ``H`` whose
    head size ``H / A`` is closest to 64 (BERT's; the thesis' 204 / 3 = 68, Sučík 2020, §4.3),
    the larger head size on a tie. E.g. 96 → 2, 204 → 3, 384 → 6, 768 → 12.

    Raises:
        ValueError: ``hidden_size < 1``.
    """
    if hidden_size < 1:
        raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
    divisors = [a for a in range(1, hidden_size + 1) if hidden_size % a == 0]
    return min(divisors, key=lambda a: (abs(hidden_size / a - 64), a))


def bert_intermediate_size(hidden_size: int) -> int:
    """The feed-forward size ``I`` of a BERT student of width ``H``: ``round(H · 750 / 204)``,
    the thesis' ratio (204 → 750, ≈ 3.7; Sučík 2020, §4.3)."""
    return round(hidden_size * 750 / 204)


def explore_bert_student(cfg: Config, transfer, dsd, n_trials: Optional[int] = None,
                         timeout_s: Optional[float] = None):
    """Explore the BERT student's size and learning rate with optuna (TPE sampler, seed ``cfg.seed``).

    Sučík (2020), §"Choosing student size": the thesis scored BERT students of several depths
    and widths and drew the dev score as a map over layers × width. This samples, for the
    BERT student of notebook 04 (:func:`kdnb.training.bert_student.distill_bert_student`, the loss,
    optimiser, embeddings and transfer set of ``bert_student``):

    * ``num_layers`` L ∈ {1, …, ``analysis.optuna_bert_max_layers``} (default 5, the thesis');
    * ``hidden_size`` H ∈ ``analysis.optuna_bert_widths`` (default 96, 204, 384; heads
      :func:`bert_num_heads`, intermediate size :func:`bert_intermediate_size`);
    * ``learning_rate`` ∈ [1e-4, 2e-3] (log scale; the thesis' 5e-4 in the middle).

    With ``bert_student.init: teacher`` (PKD / Pea-KD initialisation from the teacher's first
    L layers) the student must have the teacher's width, intermediate size and heads, so only
    ``num_layers`` (≤ the teacher's layers and ``optuna_bert_max_layers``) and ``learning_rate``
    are sampled; ``hidden_size`` is then the teacher's (a one-value choice, so the table and the
    size map keep their columns).

    The study is ``bert_student-<task>-<space>`` in the SQLite file :func:`study_path` (beside
    the BiLSTM's study), ``<space>`` naming the search space, e.g. ``L5-H96-204-384`` (and
    ``-init-teacher``): another grid or init starts another study instead of mixing trials of
    different spaces (which optuna refuses). A killed run resumes: completed trials are kept
    and only the missing ones (up to ``n_trials`` completed, default
    ``analysis.optuna_bert_trials``) are run, within ``timeout_s`` seconds (default
    ``analysis.optuna_timeout_s``; None: no limit).

    Each trial distils for ``analysis.optuna_epochs`` epochs (the warm-up scaled to keep its
    share ``bert_student.warmup_epochs / bert_student.epochs`` of the steps) and is scored by
    its best dev score over the evaluations. A trial is trained as run
    ``bert_student-<space>-trial-NNN`` of group ``optuna`` (:func:`kdnb.store.run_dir`), so under
    ``<out>/optuna/`` beside the BiLSTM's trials, not among the students; its ``model.pt`` is
    deleted after scoring.

    Args:
        transfer: the transfer set (rows with ``sentence``, ``teacher_logits`` ``(C,)``).
        dsd: the task's splits (``dev`` is scored).

    Returns:
        The ``optuna.Study``; each completed trial has user attributes ``final_dev``,
        ``n_params`` (all parameters), ``n_params_non_embedding`` (the thesis' count) and
        ``seconds`` (training and dev evaluations).

    Raises:
        StageInputError: no fine-tuned teacher (notebook 03).
        ConfigError: a sampled configuration is invalid for ``bert_student`` (e.g. its
            ``warmup_epochs``), naming the key.
    """
    import dataclasses
    import logging

    import optuna
    from transformers import AutoConfig

    from ..errors import StageInputError
    from ..training.bert_student import distill_bert_student
    from ..training.teacher import teacher_dir

    n_trials = cfg.analysis.optuna_bert_trials if n_trials is None else n_trials
    timeout_s = cfg.analysis.optuna_timeout_s if timeout_s is None else timeout_s
    bc = cfg.bert_student
    from_teacher = bc.init == "teacher"
    if from_teacher:
        mdir = teacher_dir(cfg) / "model"
        if not mdir.is_dir():
            raise StageInputError(f"{mdir}: no fine-tuned teacher; run notebooks/03_teacher first.")
        tc = AutoConfig.from_pretrained(mdir)
        max_layers = min(cfg.analysis.optuna_bert_max_layers, tc.num_hidden_layers)
        sizes = {tc.hidden_size: (tc.num_attention_heads, tc.intermediate_size)}  # H: (A, I)
    else:
        max_layers = cfg.analysis.optuna_bert_max_layers
        sizes = {h: (bert_num_heads(h), bert_intermediate_size(h)) for h in cfg.analysis.optuna_bert_widths}
    space = f"L{max_layers}-H{'-'.join(map(str, sizes))}" + ("-init-teacher" if from_teacher else "")
    cfg.out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(study_name=f"bert_student-{cfg.task}-{space}",
                                storage=f"sqlite:///{study_path(cfg)}", direction="maximize",
                                load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    epochs = cfg.analysis.optuna_epochs

    def objective(trial: "optuna.Trial") -> float:
        layers = trial.suggest_int("num_layers", 1, max_layers)
        hidden = trial.suggest_categorical("hidden_size", list(sizes))
        tbc = dataclasses.replace(
            bc, num_layers=layers, hidden_size=hidden, num_heads=sizes[hidden][0], intermediate_size=sizes[hidden][1],
            learning_rate=trial.suggest_float("learning_rate", 1e-4, 2e-3, log=True),
            epochs=epochs, warmup_epochs=bc.warmup_epochs * epochs / bc.epochs)
        name = f"bert_student-{space}-trial-{trial.number:03d}"
        res = distill_bert_student(dataclasses.replace(cfg, bert_student=tbc), transfer, dsd,
                                   name=name, method=tbc.method, group="optuna")
        return _finish_trial(trial, res, cfg.out / "optuna" / name)

    return _optimize(study, objective, n_trials, timeout_s)


def study_table(study) -> pd.DataFrame:
    """The completed trials of an optuna study: ``trial``, the sampled parameters, ``best dev``
    (the objective, as a fraction), ``parameters (M)``, ``non-embedding (M)`` (where the trials
    recorded it: BERT students) and ``seconds``; best first."""
    import optuna

    rows = []
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        non_emb = t.user_attrs.get("n_params_non_embedding")
        rows.append({"trial": t.number, **t.params, "best dev": t.value,
                     "parameters (M)": t.user_attrs.get("n_params", np.nan) / 1e6,
                     **({"non-embedding (M)": non_emb / 1e6} if non_emb is not None else {}),
                     "seconds": t.user_attrs.get("seconds")})
    df = pd.DataFrame(rows)
    return df.sort_values("best dev", ascending=False).reset_index(drop=True) if len(df) else df


SIZE_MAPS = {
    "bilstm": {"trials_key": "optuna_trials", "x": "width", "y": "embedding",
               "title": "by BiLSTM width and embedding"},
    "bert_student": {"trials_key": "optuna_bert_trials", "x": "hidden_size", "y": "num_layers",
                     "title": "by BERT student width and depth"},
}
"""The two size maps of notebook 06: the ``analysis`` key that sets their number of trials and
the map's axes (columns of :func:`size_map_trials`)."""


EMBEDDINGS = ("word2vec", "teacher_wordpiece")
"""Embedding types of the thesis' BiLSTM exploration: word-level word2vec vectors (trained with
gensim on the transfer set unless ``bilstm.word2vec.path`` names a file) and the teacher's
WordPiece embeddings."""
EMBEDDING_MODES: tuple[str, ...] = typing.get_args(EmbeddingMode)
"""Kim (2014), §2.1: frozen, fine-tuned, and both (a frozen and a fine-tuned copy)."""


def explore_embeddings(cfg: Config, transfer, dsd, embeddings: Sequence[str] = EMBEDDINGS,
                       modes: Sequence[str] = EMBEDDING_MODES, epochs: Optional[int] = None) -> pd.DataFrame:
    """The thesis' embedding exploration of the BiLSTM student (Sučík 2020, §"General
    hyperparameter exploration": embedding type × mode, after Tang et al. 2019, who use
    word2vec in Kim's 2014 multichannel mode): one BiLSTM per (type, mode) of ``embeddings`` ×
    ``modes``, all else as ``bilstm``, each distilled for ``epochs`` epochs (default
    ``analysis.optuna_epochs``) on ``transfer``.

    Each student is kept under ``<out>/explore/embeddings-<type>-<mode>/`` and reused while its
    parameters are unchanged (:func:`kdnb.training.bilstm.distill_bilstm`), so a killed grid resumes
    at the first student not yet trained.

    Returns:
        One row per student: ``embedding``, ``mode``, ``best dev`` and ``final dev`` (fractions;
        the best over the learning curve, as the thesis keeps the best checkpoint),
        ``parameters`` and ``parameters (M)`` (all, embeddings included), ``seconds`` (training wall time of the
        run that trained it).

    Raises:
        ConfigError: an unknown embedding type or mode.
    """
    import dataclasses

    from ..errors import ConfigError
    from ..training.bilstm import distill_bilstm

    bad = [e for e in embeddings if e not in typing.get_args(EmbeddingType)] + \
          [m for m in modes if m not in EMBEDDING_MODES]
    if bad:
        raise ConfigError(f"key 'analysis.explore_embeddings': unknown embedding type(s) or mode(s) {bad}.")
    rows = []
    for emb in embeddings:
        for mode in modes:
            bc = dataclasses.replace(cfg.bilstm, embedding=emb, embedding_mode=mode,
                                     epochs=cfg.analysis.optuna_epochs if epochs is None else epochs)
            res = distill_bilstm(dataclasses.replace(cfg, bilstm=bc), transfer, dsd,
                                 name=f"embeddings-{emb}-{mode}", group="explore")
            rows.append({"embedding": emb, "mode": mode, "best dev": float(res.curve["dev_score"].max()),
                         "final dev": res.dev_last if res.dev_last is not None else res.dev_score,
                         "parameters": int(res.n_params), "parameters (M)": round(res.n_params / 1e6, 2),
                         "seconds": round(res.seconds, 1)})
    return pd.DataFrame(rows)


def exploration_set(cfg: Config):
    """The rows the exploration (both optuna studies and the embedding grid) trains on: the
    transfer set of notebook 04 (``augment.transfer_set``), or ``analysis.explore_rows`` of its
    rows drawn at random with ``cfg.seed`` — the same rows for every trial, so trials differ only
    in their parameters. The thesis explored on the whole transfer set on a GPU; a subset keeps
    the ``explore`` profile within an hour per task on 2 CPU cores.

    Raises:
        StageInputError: no labelled transfer set (notebooks 02 and 03).
    """
    from ..augment import load_transfer_set

    transfer = load_transfer_set(cfg)
    n = cfg.analysis.explore_rows
    if n is None or n >= len(transfer):
        return transfer
    return transfer.shuffle(seed=cfg.seed).select(range(n))


def embedding_exploration(cfg: Config) -> pd.DataFrame:
    """:func:`explore_embeddings` on :func:`exploration_set` (the transfer set of notebook 04)
    when ``analysis.explore_embeddings`` (else an empty frame), with ``best dev (%)`` and
    ``final dev (%)`` added.

    Raises:
        StageInputError: no labelled transfer set (notebooks 02 and 03).
    """
    if not cfg.analysis.explore_embeddings:
        return pd.DataFrame()
    from ..data import load_task

    table = explore_embeddings(cfg, exploration_set(cfg), load_task(cfg.task, cfg.data_path))
    table["best dev (%)"] = (100 * table["best dev"]).round(1)
    table["final dev (%)"] = (100 * table["final dev"]).round(1)
    return table


def size_map_trials(cfg: Config, student: str) -> pd.DataFrame:
    """Run (or resume) the optuna study of ``student`` (``bilstm``: :func:`explore_bilstm`;
    ``bert_student``: :func:`explore_bert_student`) on :func:`exploration_set` (the transfer set
    of notebook 04) and return its :func:`study_table` plus ``best dev (%)`` (and, for
    the BiLSTM, ``embedding`` as "type, mode"), ready for :func:`kdnb.figures.plot_size_map` with
    the axes of :data:`SIZE_MAPS`. An empty table when ``analysis.<trials_key>`` is 0.

    Raises:
        ValueError: unknown ``student``.
        StageInputError: no labelled transfer set (notebooks 02 and 03).
    """
    if student not in SIZE_MAPS:
        raise ValueError(f"unknown student {student!r}; known: {', '.join(SIZE_MAPS)}")
    if getattr(cfg.analysis, SIZE_MAPS[student]["trials_key"]) <= 0:
        return pd.DataFrame()
    from ..data import load_task

    explore = explore_bilstm if student == "bilstm" else explore_bert_student
    trials = study_table(explore(cfg, exploration_set(cfg), load_task(cfg.task, cfg.data_path)))
    if len(trials):
        if student == "bilstm":
            trials["embedding"] = trials["embedding"] + ", " + trials["embedding_mode"]
        trials["best dev (%)"] = 100 * trials["best dev"]
    return trials


def size_map(cfg: Config, student: str) -> tuple[pd.DataFrame, Optional[Path]]:
    """Notebook 06's size map of ``student`` (``bilstm``, ``bert_student``): the
    :func:`size_map_trials` table, saved as ``<out>/<trials_key>.csv``, and its heat map of the
    best dev score over the axes of :data:`SIZE_MAPS`, saved as
    ``<figures>/<task>_<student>_size_map.png`` (and ``.pdf``).

    Returns:
        ``(trials, png path)``; ``(empty table, None)`` when ``analysis.<trials_key>`` is 0.
    """
    from ..data import task_spec
    from ..figures import plot_size_map
    from ..report import save_figure, save_table

    trials = size_map_trials(cfg, student)
    if not len(trials):
        return trials, None
    m = SIZE_MAPS[student]
    save_table(cfg, trials, m["trials_key"])
    fig = plot_size_map(trials, m["x"], m["y"], "best dev (%)", cfg.task,
                        f"best dev {task_spec(cfg.task).metric_label} {m['title']}")
    return trials, save_figure(cfg, fig, f"{student}_size_map")
