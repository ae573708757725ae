"""The experiments that compare methods on one task (notebook 04): each trains students through
:mod:`kdnb.training` and returns one table.

* :func:`augmentation_ablation` — one BiLSTM per transfer set (none, rules, GPT-2, both;
  Tang et al. 2019, §3.3; Sučík 2020, §3);
* :func:`transfer_size_ablation` — the BiLSTM against the size of the transfer set;
* :func:`kd_ablation` — one BERT student per KD method of ``kd_ablation.methods``
  (:data:`kdnb.training.bert_student.METHODS`);
* :func:`peakd_comparison` — Pea-KD's students (Cho & Kang 2020): depths × variants
  ``kd``/``sps``/``ptp``/``sps+ptp`` × seeds.

Each logs its wall time as a stage of the run (:func:`kdnb.store.timed`): the runtimes table
shows it beside the thesis' steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import datasets
import numpy as np
import pandas as pd

from . import store
from .augment import load_transfer_set, training_sentences
from .augment.shards import column
from .config import Config
from .data import task_spec
from .errors import ConfigError
from .store import RunResult
from .training.bert_student import (
    distill_bert_student,
    method_label,
    teacher_fidelity,
)
from .training.peakd import distill_peakd, teacher_states
from .utils import Timer


# ---------------------------------------------------------------------------------------------
# The ablation: one BiLSTM per transfer set
# ---------------------------------------------------------------------------------------------
def ablation_epochs(cfg: Config, n_rows: int, n_none: int) -> int:
    """BiLSTM epochs on a transfer set of ``n_rows``: ``bilstm.epochs`` (``equal_epochs``), or as
    many as give the same number of examples seen as ``bilstm.epochs`` on the ``n_none``
    training rows (``equal_steps``; at least 1)."""
    if cfg.augment.ablation_budget == "equal_epochs":
        return cfg.bilstm.epochs
    return max(1, round(cfg.bilstm.epochs * n_none / max(n_rows, 1)))


@store.timed("augmentation_ablation")
def augmentation_ablation(cfg: Config, dsd: datasets.DatasetDict, done: Optional[dict] = None,
                          force: bool = False) -> pd.DataFrame:
    """Train one BiLSTM student per set in ``augment.ablation_sets`` and tabulate dev scores.

    Students are ``kdnb.training.bilstm.distill_bilstm(..., name=f"bilstm_{set}")`` (``+`` becomes
    ``_``) with ``bilstm.epochs`` set by :func:`ablation_epochs`. ``done`` maps a set name to
    a :class:`~kdnb.store.RunResult` already trained on it with the same epochs (the
    main student of notebook 04), which is then reused instead of retrained. Writes
    ``<out>/augmentation_ablation.csv`` (:func:`kdnb.report.save_table`).

    Returns:
        One row per set: ``transfer set``, ``sentences``, ``augmented``, ``epochs``,
        ``examples seen``, ``dev <metric> (%)``, ``test <metric> (%)`` (only where the test
        set is labelled), ``seconds``.

    Raises:
        StageInputError: a transfer set was not labelled (notebook 03 with ``augment.ablation``).
    """
    from . import report
    from .training.bilstm import distill_bilstm

    label = task_spec(cfg.task).metric_label
    n_none = len(training_sentences(cfg, dsd))
    done = done or {}
    rows = []
    for name in cfg.augment.ablation_sets:
        ts = load_transfer_set(cfg, name)
        epochs = ablation_epochs(cfg, len(ts), n_none)
        if name in done and epochs == cfg.bilstm.epochs:
            res = done[name]
        else:
            sub = dataclasses.replace(cfg, bilstm=dataclasses.replace(cfg.bilstm, epochs=epochs))
            res = distill_bilstm(sub, ts, dsd, name=f"bilstm_{name.replace('+', '_')}", force=force)
        rows.append({"transfer set": name, "sentences": len(ts), "augmented": len(ts) - n_none, "epochs": epochs,
                     "examples seen": epochs * len(ts), f"dev {label} (%)": round(100 * res.dev_score, 1),
                     f"test {label} (%)": None if res.test_score is None else round(100 * res.test_score, 1),
                     "seconds": round(res.seconds, 1)})
    table = pd.DataFrame(rows).dropna(axis=1, how="all")  # no test column for unlabelled test sets
    report.save_table(cfg, table, "augmentation_ablation")
    return table


# ---------------------------------------------------------------------------------------------
# The finding: the BiLSTM vs the size of the transfer set
# ---------------------------------------------------------------------------------------------
@store.timed("transfer_size_ablation")
def transfer_size_ablation(cfg: Config, transfer: datasets.Dataset, dsd: datasets.DatasetDict,
                           teacher_dev: float, done: Optional[object] = None, force: bool = False) -> pd.DataFrame:
    """The BiLSTM distilled on growing prefixes of the labelled transfer set (Sučík 2020, §3 and
    ch. 5; Tang et al. 2019, Table 3; Tang & Lin 2019): the training rows plus the first ``n``
    augmented ones for each ``n`` of ``augment.size_ablation`` (0 = the training set alone), every
    student with the same ``bilstm`` parameters (epochs included), seed and teacher, saved as
    ``<out>/students/bilstm_size<n>``. ``done``: the main BiLSTM, already trained on the whole
    ``transfer`` (reused for the largest size when it equals ``len(transfer)``). Writes
    ``<out>/transfer_size_ablation.csv``.

    Returns:
        One row per size: ``augmented`` (n), ``transfer-set rows``, ``dev <metric> (%)`` (kept,
        best dev checkpoint), ``dev, last epoch (%)``, ``best epoch``, ``retention (%)`` (kept dev /
        ``teacher_dev``), ``test <metric> (%)`` where labelled, ``seconds`` (training wall time).

    Raises:
        ConfigError: a size larger than the transfer set's augmented rows.
    """
    from . import report
    from .training.bilstm import distill_bilstm

    label = task_spec(cfg.task).metric_label
    n_train = int(sum(1 for s in column(transfer, "source") if s == "train"))
    n_aug = len(transfer) - n_train
    rows = []
    for n in cfg.augment.size_ablation:
        if n > n_aug:
            raise ConfigError(f"key 'augment.size_ablation': size {n} exceeds the {n_aug} augmented sentences of "
                              f"transfer set '{cfg.augment.transfer_set}' (augment.transfer_size).")
        if done is not None and n == n_aug:
            res = done
        else:
            res = distill_bilstm(cfg, transfer.select(range(n_train + n)), dsd, name=f"bilstm_size{n}", force=force)
        rows.append({"augmented": n, "transfer-set rows": n_train + n,
                     f"dev {label} (%)": round(100 * res.dev_score, 1),
                     f"dev {label}, last epoch (%)": None if res.dev_last is None else round(100 * res.dev_last, 1),
                     "best epoch": res.best_epoch,
                     "retention (%)": round(100 * res.dev_score / teacher_dev, 1) if teacher_dev else None,
                     f"test {label} (%)": None if res.test_score is None else round(100 * res.test_score, 1),
                     "seconds": round(res.seconds, 1)})
    table = pd.DataFrame(rows).dropna(axis=1, how="all")
    report.save_table(cfg, table, "transfer_size_ablation")
    return table


def plot_transfer_size(table: pd.DataFrame, task: str, teacher_dev: float, metric_label: str):
    """The finding in one figure: the BiLSTM's dev score (kept checkpoint) against the number of
    augmented sentences in its transfer set, with the teacher's dev score as a line and the
    retention on a second axis. ``table``: :func:`transfer_size_ablation`'s."""
    import matplotlib.pyplot as plt

    dev_col = f"dev {metric_label} (%)"
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = table["augmented"].to_numpy()
    ax.plot(x, table[dev_col], "o-", color="C0", label="BiLSTM student (kept checkpoint)")
    if f"dev {metric_label}, last epoch (%)" in table:
        ax.plot(x, table[f"dev {metric_label}, last epoch (%)"], "x--", color="C0", alpha=0.5, label="last epoch")
    ax.axhline(100 * teacher_dev, color="C3", lw=1.2, label=f"teacher ({100 * teacher_dev:.1f})")
    ax.set_xlabel("augmented sentences in the transfer set (besides the training set)")
    ax.set_ylabel(f"dev {metric_label} (%)")
    ax.set_ylim(bottom=min(0.0, float(table[dev_col].min())))
    if teacher_dev:
        right = ax.twinx()
        lo, hi = ax.get_ylim()  # in %: the same points as a share of the teacher's dev score
        right.set_ylim(lo / teacher_dev, hi / teacher_dev)
        right.set_ylabel("retention (% of the teacher)")
    ax.set_title(f"{task}: student skill vs transfer-set size")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The KD-loss ablation: one BERT student per method
# ---------------------------------------------------------------------------------------------
@store.timed("kd_ablation")
def kd_ablation(cfg: Config, transfer_set: datasets.Dataset, dsd: datasets.DatasetDict,
                done: Optional[RunResult] = None, force: bool = False,
                bilstm: Optional[RunResult] = None) -> pd.DataFrame:
    """Train one BERT student per method of ``kd_ablation.methods`` and tabulate them.

    Every student has the sizes, optimiser, epochs and transfer set of ``bert_student``, so the
    rows differ only in the objective. ``done`` is the BERT student already trained with
    ``bert_student.loss``: with ``ce`` or ``kl`` it is the ``kl`` row (soft cross-entropy and
    KL differ by a constant, so their gradients are identical) instead of a second identical
    run; trained with a ``method`` (``bert_student.method``), it is that method's row. Students
    are ``<out>/students/bert_kd_<method>/``. ``bilstm`` (the BiLSTM student of notebook 04), if
    given, is the first row, for comparison. Writes ``<out>/kd_ablation.csv``
    (:func:`kdnb.report.save_table`).

    Returns:
        One row per student: ``student``, ``method``, ``objective``, ``parameters (M)`` (all),
        ``non-embedding (M)`` (BERT students: encoder, pooler, classifier), ``dev <metric>
        (%)``, ``retention (%)`` (student dev / teacher dev), ``agreement (%)`` and ``dev KL``
        (:func:`teacher_fidelity`), ``train time (s)`` (training
        steps and dev evaluations, as recorded by :func:`kdnb.training.fit.fit`; for ``ta`` the
        assistant's included).

    Raises:
        ValueError, ConfigError, StageInputError: as :func:`distill_bert_student`.
    """
    from . import report

    bc = cfg.bert_student
    label = task_spec(cfg.task).metric_label
    teacher_dev = store.record(cfg).get("dev_score")

    def row(student: str, method: str, objective: str, res: RunResult, non_embedding, seconds: float) -> dict:
        fid = teacher_fidelity(cfg, res.name)
        return {"student": student, "method": method, "objective": objective,
                "parameters (M)": round(res.n_params / 1e6, 2),
                "non-embedding (M)": None if non_embedding is None else round(non_embedding / 1e6, 2),
                f"dev {label} (%)": round(100 * res.dev_score, 1),
                "retention (%)": None if not teacher_dev else round(100 * res.dev_score / teacher_dev, 1),
                "agreement (%)": None if fid is None else round(100 * fid[0], 1),
                "dev KL": None if fid is None else round(fid[1], 4),
                "train time (s)": round(seconds, 1)}

    rows = []
    if bilstm is not None:
        rows.append(row("BiLSTM (Tang et al. 2019)", cfg.bilstm.loss, f"{cfg.bilstm.loss} on logits", bilstm, None,
                        bilstm.seconds))
    student = f"BERT L={bc.num_layers} H={bc.hidden_size}, init {bc.init}"
    for method in cfg.kd_ablation.methods:
        objective = method_label(method, cfg)
        if method == "kl" and done is not None and done.method is None and bc.loss in ("ce", "kl"):
            res = done
            objective = f"{bc.loss} at T={bc.temperature:g} (the BERT student run; same gradients as KL·T²)"
        elif done is not None and method == done.method:  # notebook 04's student ran this very method
            res = done
            objective = f"{objective} (the BERT student run)"
        else:
            res = distill_bert_student(cfg, transfer_set, dsd, name=f"bert_kd_{method}", method=method, force=force)
        rows.append(row(student, method, objective, res, res.n_params_non_embedding,
                        res.seconds + res.assistant_seconds))
    table = pd.DataFrame(rows)
    report.save_table(cfg, table, "kd_ablation")
    return table


@dataclass
class PeaKDComparison:
    """What :func:`peakd_comparison` returns: ``table`` (one row per student, seeds averaged),
    ``runs`` (one :class:`~kdnb.store.RunResult` per student and seed), the teacher's dev score and the
    seconds spent on the teacher's states."""

    table: pd.DataFrame
    runs: list[RunResult]
    teacher_dev: float
    teacher_seconds: float


@store.timed("peakd")
def peakd_comparison(cfg: Config, transfer_set: datasets.Dataset, dsd: datasets.DatasetDict,
                     force: bool = False) -> PeaKDComparison:
    """Train every student of the ``peakd`` params — each depth of ``peakd.layers`` × variant
    of ``peakd.variants`` × seed of ``peakd.seeds`` (``[]``: the run's seed) — on the same
    transfer set with the same seeds, and tabulate them.

    Returns:
        :class:`PeaKDComparison`; ``table`` columns: ``student`` (depth, SPS, PTP), ``layers``,
        ``effective layers``, ``SPS``, ``PTP``, ``seeds``, ``parameters``, ``non-embedding
        parameters``, ``dev <metric> (%)``
        (mean over seeds), ``dev std`` (sample std over seeds, ddof 1; None with one seed),
        ``dev mean ± std`` (text), ``init`` (pretrained | teacher), ``PTP epochs (mean)``
        (epochs PTP ran before early stopping), ``retention (%)`` (mean dev / teacher dev),
        ``train time (s)`` (mean, PTP included).

    Raises:
        StageInputError: no fine-tuned teacher; ConfigError: a depth deeper than the teacher.
    """


    pc = cfg.peakd
    seeds = list(pc.seeds) or [cfg.seed]
    with Timer() as timer:
        states = teacher_states(cfg, transfer_set, dsd["dev"], force=force)
    for k in pc.layers:
        if k > states.num_layers:
            raise ConfigError(f"key 'peakd.layers': the teacher has {states.num_layers} layers; cannot keep {k}.")
    runs = [distill_peakd(cfg, transfer_set, dsd, k=k, sps="sps" in v, ptp="ptp" in v, seed=s, states=states,
                          force=force)
            for k in pc.layers for v in pc.variants for s in seeds]
    teacher_dev = store.record(cfg).get("dev_score")
    metric = task_spec(cfg.task).metric_label
    rows = []
    for k in pc.layers:
        for v in pc.variants:
            group = [r for r in runs if r.layers == k and r.sps == ("sps" in v) and r.ptp == ("ptp" in v)]
            dev = np.array([r.dev_score for r in group])
            std = 100 * float(dev.std(ddof=1)) if len(dev) > 1 else None
            ptp_ep = [r.ptp_epochs for r in group if r.ptp_epochs]
            rows.append({
                "student": f"{k}-layer" + (" + SPS" if "sps" in v else "") + (" + PTP" if "ptp" in v else "")
                           + (" (plain KD)" if v == "kd" else ""),
                "layers": k, "effective layers": group[0].effective_layers,
                "SPS": "yes" if "sps" in v else "no", "PTP": "yes" if "ptp" in v else "no",
                "seeds": ",".join(str(r.seed) for r in group),
                "parameters": group[0].n_params,
                "non-embedding parameters": group[0].n_params_non_embedding,
                f"dev {metric} (%)": round(100 * float(dev.mean()), 1),
                "dev std": None if std is None else round(std, 1),
                "dev mean ± std": f"{100 * float(dev.mean()):.1f}" + ("" if std is None else f" ± {std:.1f}"),
                "init": pc.init,
                "PTP epochs (mean)": round(float(np.mean(ptp_ep)), 1) if ptp_ep else None,
                "retention (%)": round(100 * float(dev.mean()) / teacher_dev, 1) if teacher_dev else None,
                "train time (s)": round(float(np.mean([r.seconds for r in group])), 1),
            })
    return PeaKDComparison(pd.DataFrame(rows), runs, teacher_dev, timer.seconds)
