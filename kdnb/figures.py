"""Seaborn figures of the study (Agg backend; the notebooks save them with
:func:`kdnb.report.save_figure` as ``thesis_figures/<task>_<name>.png``)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import datasets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def split_stats(dsd: datasets.DatasetDict, tokenizer=None) -> pd.DataFrame:
    """Rows per split, labelled or not, mean/max length in words (and WordPiece tokens)."""
    rows = []
    for split, ds in dsd.items():
        words = [len(s.split()) for s in ds["sentence"]]
        row = {"split": split, "rows": len(ds), "labelled": min(ds["label"]) >= 0,
               "mean words": round(sum(words) / len(words), 2), "max words": max(words)}
        if tokenizer is not None:
            pieces = [len(ids) for ids in tokenizer(list(ds["sentence"]), add_special_tokens=False)["input_ids"]]
            row["mean WordPiece"] = round(sum(pieces) / len(pieces), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def class_balance(dsd: datasets.DatasetDict) -> pd.DataFrame:
    """Long table ``split, label, count, share`` over the labelled splits."""
    rows = []
    for split, ds in dsd.items():
        if min(ds["label"]) < 0:
            continue
        names = ds.features["label"].names
        counts = pd.Series(ds["label"]).value_counts()
        for lab, n in counts.items():
            rows.append({"split": split, "label": names[lab], "count": int(n), "share": n / len(ds)})
    return pd.DataFrame(rows).sort_values(["split", "label"]).reset_index(drop=True)


def plot_class_balance(balance: pd.DataFrame, task: str):
    """Bar chart of class shares per split; many classes (Sara) go on the y axis."""
    n_labels = balance["label"].nunique()
    if n_labels > 6:
        fig, ax = plt.subplots(figsize=(8, max(4, 0.22 * n_labels)))
        sns.barplot(balance, y="label", x="share", hue="split", ax=ax)
        ax.set(xlabel="share of split", ylabel="intent")
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        sns.barplot(balance, x="label", y="share", hue="split", ax=ax)
        ax.set(xlabel="class", ylabel="share of split")
    ax.set_title(f"{task}: class balance")
    fig.tight_layout()
    return fig


def plot_lengths(dsd: datasets.DatasetDict, task: str):
    """Histogram of sentence length in words, one colour per split (densities)."""
    df = pd.concat([pd.DataFrame({"split": split, "words": [len(s.split()) for s in ds["sentence"]]})
                    for split, ds in dsd.items()])
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.histplot(df, x="words", hue="split", stat="density", common_norm=False, discrete=True,
                 element="step", ax=ax)
    ax.set(xlabel="sentence length (words)", ylabel="density", title=f"{task}: sentence lengths")
    fig.tight_layout()
    return fig


def plot_learning_curves(curves: dict[str, pd.DataFrame], metric_label: str, task: str):
    """Dev score (in %) against training epoch, one line per model (``curves[name]`` has the
    columns ``epoch`` and ``dev_score`` of :class:`kdnb.distill.FitResult`)."""
    df = pd.concat([c.assign(model=name, dev=100 * c["dev_score"]) for name, c in curves.items()])
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(df, x="epoch", y="dev", hue="model", marker="o", ax=ax)
    ax.set(xlabel="epoch", ylabel=f"dev {metric_label} (%)", title=f"{task}: learning curve")
    fig.tight_layout()
    return fig
