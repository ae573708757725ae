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
    columns ``epoch`` and ``dev_score`` of :class:`kdnb.training.fit.FitResult`)."""
    df = pd.concat([c.assign(model=name, dev=100 * c["dev_score"]) for name, c in curves.items()])
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(df, x="epoch", y="dev", hue="model", marker="o", ax=ax)
    ax.set(xlabel="epoch", ylabel=f"dev {metric_label} (%)", title=f"{task}: learning curve")
    fig.tight_layout()
    return fig


# ---- prediction analysis and efficiency (notebook 06; kdnb.analysis, kdnb.analysis.bench) ----------------


def plot_confidence_correlation(corr: pd.DataFrame, task: str):
    """Heat map of Pearson's r between the models' dev-set confidences
    (:func:`kdnb.analysis.predictions.confidence_correlation`)."""
    n = len(corr)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * n, 1.2 + 0.9 * n))
    sns.heatmap(corr.astype(float), annot=True, fmt=".2f", vmin=-1, vmax=1, cmap="vlag", square=True,
                cbar_kws={"label": "Pearson's r"}, ax=ax)
    ax.set(xlabel="model", ylabel="model", title=f"{task}: correlation of confidences (dev)")
    fig.tight_layout()
    return fig


def plot_average_confidence(stats: pd.DataFrame, task: str):
    """Bars of the mean confidence (± one standard deviation) per model on its correct and its
    incorrect dev predictions (:func:`kdnb.analysis.predictions.confidence_by_outcome`)."""
    models = list(dict.fromkeys(stats["model"]))
    outcomes = ["correct", "incorrect"]
    fig, ax = plt.subplots(figsize=(1.5 + 1.4 * len(models), 4))
    sns.barplot(stats, x="model", y="mean", hue="outcome", order=models, hue_order=outcomes, ax=ax)
    width = 0.8 / len(outcomes)
    for j, outcome in enumerate(outcomes):
        sub = stats[stats["outcome"] == outcome].set_index("model").reindex(models)
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(models))]
        ax.errorbar(xs, sub["mean"], yerr=sub["std"], fmt="none", ecolor="black", capsize=4, lw=1)
    ax.set(xlabel="model", ylabel="confidence (max softmax probability)", ylim=(0, 1.05),
           title=f"{task}: average confidence (dev, ± 1 std)")
    ax.legend(title="prediction", loc="lower right")
    fig.tight_layout()
    return fig


def plot_overlap(matrix: pd.DataFrame, task: str, kind: str = "mistakes", measure: str = "share"):
    """Heat map of the overlap of the models' mistakes or hits (:func:`kdnb.analysis.predictions.overlap_matrix`,
    computed with the same ``measure``). With ``share`` (the thesis' measure, Sučík 2020) cell
    (row a, column b) is the share of a's mistakes that b makes too, so the map is not symmetric.

    Raises:
        KeyError: unknown ``measure``.
    """
    n = len(matrix)
    label = {"jaccard": "shared / union (Jaccard)", "count": "shared examples",
             "share": f"share of the row model's {kind} the column model shares"}[measure]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * n, 1.2 + 0.9 * n))
    fmt = ".0f" if measure == "count" else ".2f"
    sns.heatmap(matrix.astype(float), annot=True, fmt=fmt, cmap="rocket_r", square=True,
                vmin=0, vmax=None if measure == "count" else 1, cbar_kws={"label": label}, ax=ax)
    ax.set(xlabel="model 2 (also makes them)" if measure == "share" else "model",
           ylabel=f"model 1 (its {kind})" if measure == "share" else "model",
           title=f"{task}: overlap of {kind} (dev)")
    fig.tight_layout()
    return fig


def plot_mistake_classes(dist: pd.DataFrame, task: str):
    """Share of each model's dev mistakes by true class (:func:`kdnb.analysis.predictions.mistake_classes`);
    with many classes (Sara's 57 intents) the class names go on the y axis."""
    n_labels = dist["label"].nunique()
    if n_labels > 6:
        order = (dist.groupby("label")["mistakes"].sum().sort_values(ascending=False).index.tolist())
        fig, ax = plt.subplots(figsize=(8, max(4, 0.25 * n_labels)))
        sns.barplot(dist, y="label", x="share", hue="model", order=order, ax=ax)
        ax.set(xlabel="share of the model's mistakes", ylabel="true intent")
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        sns.barplot(dist, x="label", y="share", hue="model", ax=ax)
        ax.set(xlabel="true class", ylabel="share of the model's mistakes", ylim=(0, 1))
    ax.set_title(f"{task}: class distribution of mistakes (dev)")
    fig.tight_layout()
    return fig


def plot_speed(table: pd.DataFrame, task: str):
    """Milliseconds per example (log scale) of every benchmarked model and input setting
    (:func:`kdnb.analysis.bench.efficiency_table`), one panel per device."""
    df = table.copy()
    fig, ax = plt.subplots(figsize=(8, max(3, 0.45 * df["model"].nunique() * max(1, df["device"].nunique()))))
    df["setting"] = df["device"] + ", " + df["input"]
    sns.barplot(df, y="model", x="ms/example", hue="setting", ax=ax)
    ax.set_xscale("log")
    ax.set(xlabel="inference time per example (ms, log scale)", ylabel="model",
           title=f"{task}: inference speed (batch {int(df['batch'].iloc[0])})")
    ax.legend(title="device, input", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def plot_size_map(df: pd.DataFrame, x: str, y: str, value: str, task: str, title: str):
    """Heat map of ``value`` (e.g. best dev score) over two hyperparameters ``x`` and ``y`` —
    the thesis' "size maps" of student width × depth."""
    grid = df.pivot_table(index=y, columns=x, values=value, aggfunc="max")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.9 * grid.shape[1]), max(3.0, 1.2 + 0.6 * grid.shape[0])))
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="mako_r", cbar_kws={"label": value}, ax=ax)
    ax.grid(False)  # the style's grid lines would cross the cells and the untried (blank) ones
    ax.set(xlabel=x, ylabel=y, title=f"{task}: {title}")
    fig.tight_layout()
    return fig


def plot_embedding_modes(df: pd.DataFrame, task: str, value: str = "best dev (%)"):
    """The thesis' embedding exploration of the BiLSTM: ``value`` (e.g. best dev score, %) per
    embedding mode (Kim 2014: static / non-static / multichannel) and embedding type (word2vec /
    teacher WordPiece) — bars grouped by mode (:func:`kdnb.analysis.explore.explore_embeddings`)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    sns.barplot(df, x="mode", y=value, hue="embedding", ax=ax)
    ax.set(xlabel="embedding mode", ylabel=value, title=f"{task}: BiLSTM embedding type × mode (dev)")
    ax.legend(title="embedding", loc="lower right")
    fig.tight_layout()
    return fig
