"""The probing figures: teacher layers, students against the teacher, initialised vs trained.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from .data import CONNEAU_2018, CONNEAU_2018_LABELS, PROBING_TASKS
from .probe import best_layers

# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

_BASELINE_STYLE = {
    "majority (this data)": dict(color="0.35", ls="--", lw=1.2),
    CONNEAU_2018_LABELS["human"]: dict(color="tab:green", ls=":", lw=1.5),
    CONNEAU_2018_LABELS["best"]: dict(color="tab:purple", ls="-.", lw=1.2),
}


def _task_grid(n: int, width: float = 3.2, height: float = 2.8):
    import matplotlib.pyplot as plt

    from ... import figures  # noqa: F401  (Agg backend, seaborn theme)

    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _baseline_lines(ax, sizes: pd.DataFrame, task: str) -> None:
    s = sizes.set_index("task").loc[task]
    ax.axhline(s["majority (this data, %)"], **_BASELINE_STYLE["majority (this data)"], label="majority (this data)")
    for row in ("human", "best"):
        label = CONNEAU_2018_LABELS[row]
        ax.axhline(CONNEAU_2018[row][task], **_BASELINE_STYLE[label], label=label)


def _finish(fig, axes, title: str):
    handles = {}
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
        if ax.get_legend():
            ax.get_legend().remove()
    fig.suptitle(title)
    fig.tight_layout()
    # below the panels; kdnb.report.save_figure saves with bbox_inches="tight", which keeps it
    fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=min(3, len(handles)),
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    return fig


def plot_teacher_layers(scores: pd.DataFrame, sizes: pd.DataFrame, task_name: str = ""):
    """Thesis figure "teacher layers vs baselines": one panel per probing task, test accuracy
    (%) of the teacher's layers (E, 1, ...; one line per teacher state: fine-tuned, pre-trained)
    against the majority class of this data and Conneau et al.'s (2018) human and best-encoder
    numbers."""
    import seaborn as sns

    teach = scores[scores["family"] == "teacher"]
    tasks = [t for t in PROBING_TASKS if t in set(teach["task"])]
    fig, axes = _task_grid(len(tasks))
    labels = list(dict.fromkeys(teach.sort_values("depth")["layer"]))
    for ax, t in zip(axes, tasks):
        sub = teach[teach["task"] == t]
        sns.lineplot(sub, x="depth", y="test_acc", hue="model", marker="o", ax=ax)
        _baseline_lines(ax, sizes, t)
        ax.set_xticks(range(len(labels)), labels)
        ax.set(title=t, xlabel="layer", ylabel="test accuracy (%)", ylim=(0, 102))
    return _finish(fig, axes, f"{task_name + ': ' if task_name else ''}probing the teacher's layers")


def _last_layers(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of each model's deepest probed layer (the BERT student's ``L``; the BiLSTM's ``final``)."""
    if not len(df):
        return df
    deepest = df.groupby("model")["depth"].transform("max")
    return df[df["depth"] == deepest]


def _who(df: pd.DataFrame, with_state: bool) -> pd.Series:
    """Bar label: the model, and for multi-layer students the layer shown (``bert_student (layer 5)``)."""
    multi = df.groupby("model")["layer"].transform(lambda l: l.iloc[0] != "final")
    base = df["family"] + " · " + df["state"] if with_state else df["model"]
    return base.where(~multi, base + " (layer " + df["layer"].astype(str) + ")")


def plot_students_vs_teacher(scores: pd.DataFrame, sizes: pd.DataFrame, task_name: str = ""):
    """Thesis figure "students vs teacher" (Sučík 2020, probing figures; here with both
    students): per probing task, test accuracy (%) of the fine-tuned teacher's last layer and of
    its best layer (chosen on ``va``, :func:`best_layers`) and of each trained student's last
    layer (the BiLSTM's final states, the BERT student's layer ``L``), with the same baselines
    as :func:`plot_teacher_layers`. Every layer of every model: :func:`plot_layers_by_depth`."""
    import seaborn as sns

    rows = []
    teach = scores[scores["model"] == "teacher"]
    if len(teach):
        last = teach[teach["depth"] == teach["depth"].max()]
        rows.append(last.assign(who=f"teacher (layer {last['layer'].iloc[0]})"))
        best = best_layers(teach, "teacher")
        best = teach.merge(best[["task", "layer"]], on=["task", "layer"])
        rows.append(best.assign(who="teacher (best layer on va)"))
    studs = _last_layers(scores[(scores["family"] != "teacher") & (scores["state"] == "trained")])
    rows.append(studs.assign(who=_who(studs, False)))
    df = pd.concat(rows, ignore_index=True)
    tasks = [t for t in PROBING_TASKS if t in set(df["task"])]
    fig, axes = _task_grid(len(tasks))
    for ax, t in zip(axes, tasks):
        sns.barplot(df[df["task"] == t], x="who", y="test_acc", hue="who", ax=ax, legend=True)
        _baseline_lines(ax, sizes, t)
        ax.set(title=t, xlabel="", ylabel="test accuracy (%)", ylim=(0, 102), xticks=[])
    return _finish(fig, axes, f"{task_name + ': ' if task_name else ''}students vs teacher")


def plot_students_init_vs_trained(scores: pd.DataFrame, sizes: pd.DataFrame, task_name: str = ""):
    """Thesis figure "students initialised vs trained" (with both students): per probing task,
    test accuracy (%) of each student's last layer before distillation (initialised) and after
    (trained) — what KD added — with the same baselines as :func:`plot_teacher_layers`. The BERT
    student's other layers, initialised and trained: :func:`plot_layers_by_depth`."""
    import seaborn as sns

    df = scores[(scores["family"] != "teacher") & scores["state"].isin(["initialised", "trained"])]
    df = _last_layers(df)
    df = df.assign(who=_who(df, True))
    tasks = [t for t in PROBING_TASKS if t in set(df["task"])]
    fig, axes = _task_grid(max(1, len(tasks)))
    order = sorted(set(df["who"]), key=lambda w: (w.split(" · ")[0], "· trained" in w))
    for ax, t in zip(axes, tasks):
        sns.barplot(df[df["task"] == t], x="who", y="test_acc", hue="who", order=order, hue_order=order, ax=ax,
                    legend=True)
        _baseline_lines(ax, sizes, t)
        ax.set(title=t, xlabel="", ylabel="test accuracy (%)", ylim=(0, 102), xticks=[])
    return _finish(fig, axes, f"{task_name + ': ' if task_name else ''}students before (initialised) and after KD")


def plot_layers_by_depth(scores: pd.DataFrame, sizes: pd.DataFrame, task_name: str = "",
                         states: Sequence[str] = ("fine-tuned", "pre-trained", "trained", "initialised")):
    """Every probed layer of every model by relative depth — the teacher's (E, 1, …, N), the
    BERT student's (E, 1, …, L) and the BiLSTM's final states (at depth 1) — one panel per
    probing task, test accuracy (%); colour: the model family, line style: its state (solid:
    fine-tuned / trained, dashed: pre-trained / initialised). Where the knowledge sits in each
    architecture and what distillation moved (Sučík 2020 asks both for the two students).

    Args:
        scores: :attr:`ProbingRun.scores` (needs ``rel_depth``).
        states: the states drawn.

    Returns:
        The matplotlib figure.
    """
    import seaborn as sns

    df = scores[scores["state"].isin(list(states))].copy()
    if "rel_depth" not in df:
        df["rel_depth"] = df.groupby("model")["depth"].transform(lambda d: d / max(d.max(), 1))
    df["state kind"] = df["state"].map(lambda st: "before KD / fine-tuning" if st in ("pre-trained", "initialised")
                                       else "after")
    tasks = [t for t in PROBING_TASKS if t in set(df["task"])]
    fig, axes = _task_grid(max(1, len(tasks)))
    families = list(dict.fromkeys(df.sort_values("family", key=lambda f: f != "teacher")["family"]))
    for ax, t in zip(axes, tasks):
        sub = df[df["task"] == t].sort_values(["model", "rel_depth"])
        sns.lineplot(sub, x="rel_depth", y="test_acc", hue="family", hue_order=families, style="state kind",
                     style_order=["after", "before KD / fine-tuning"], units="model", estimator=None, marker="o",
                     ax=ax)
        _baseline_lines(ax, sizes, t)
        ax.set(title=t, xlabel="relative depth (E = 0, last layer = 1)", ylabel="test accuracy (%)",
               ylim=(0, 102), xlim=(-0.05, 1.05))
    return _finish(fig, axes, f"{task_name + ': ' if task_name else ''}every layer of the teacher and the students")
