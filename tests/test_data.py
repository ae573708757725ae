import pytest

from kdnb.data import load_task, score, subsample
from kdnb.errors import DataError

from .conftest import SHARED_DATA


@pytest.mark.parametrize("task, sizes, n_labels", [
    ("cola", {"train": 8551, "dev": 527, "test": 1063}, 2),
    ("sst2", {"train": 67349, "dev": 872, "test": 1821}, 2),
    ("sara", {"train": 2853, "dev": 970, "test": 987}, 57),
    ("rte", {"train": 2490, "dev": 277}, 2),
])
def test_counts_match_the_data_readme(task, sizes, n_labels):
    dsd = load_task(task, SHARED_DATA)
    assert {k: len(v) for k, v in dsd.items()} == sizes
    assert dsd["train"].features["label"].num_classes == n_labels
    assert {"idx", "sentence", "label"} <= set(dsd["train"].column_names)


def test_cola_contents_and_unlabelled_test():
    dsd = load_task("cola", SHARED_DATA)
    row = dsd["train"][0]
    assert row["sentence"] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert row["label"] == 1
    assert set(dsd["test"]["label"]) == {-1}
    assert dsd["train"].features["label"].names == ["unacceptable", "acceptable"]


def test_sara_has_intent_names():
    names = load_task("sara", SHARED_DATA)["train"].features["label"].names
    assert len(names) == 57 and names[0] == "affirm" and names[1] == "ask_builder"


def test_rte_is_a_pair_task_with_string_labels():
    dsd = load_task("rte", SHARED_DATA)
    assert "sentence2" in dsd["train"].column_names
    assert dsd["train"][0]["label"] == 1  # not_entailment


def _corrupt(path, lineno, new):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = new
    path.write_text("\n".join(lines) + "\n")


def test_wrong_column_count_names_file_and_line(data_copy):
    _corrupt(data_copy / "cola" / "train.tsv", 17, "gj04\t1\tonly three columns")
    with pytest.raises(DataError, match=r"cola/train.tsv, line 17: expected 4 tab-separated columns, found 3"):
        load_task("cola", data_copy)


def test_unknown_label_names_file_and_line(data_copy):
    _corrupt(data_copy / "sst2" / "dev.tsv", 5, "a fine film\t7")
    with pytest.raises(DataError, match=r"sst2/dev.tsv, line 5: unknown label '7'"):
        load_task("sst2", data_copy)
    _corrupt(data_copy / "sara" / "train.tsv", 3, "99\thello")
    with pytest.raises(DataError, match=r"sara/train.tsv, line 3: unknown label '99'; expected an integer in 0..56"):
        load_task("sara", data_copy)
    _corrupt(data_copy / "rte" / "dev.tsv", 2, "0\ta\tb\tmaybe")
    with pytest.raises(DataError, match=r"rte/dev.tsv, line 2: unknown label 'maybe'"):
        load_task("rte", data_copy)


def test_wrong_header_and_empty_sentence(data_copy):
    _corrupt(data_copy / "sst2" / "train.tsv", 1, "text\tlabel")
    with pytest.raises(DataError, match=r"sst2/train.tsv, line 1: expected header"):
        load_task("sst2", data_copy)
    _corrupt(data_copy / "cola" / "dev.tsv", 3, "gj04\t1\t\t   ")
    with pytest.raises(DataError, match=r"cola/dev.tsv, line 3: empty sentence"):
        load_task("cola", data_copy)


def test_missing_dir_file_and_task(data_copy, tmp_path):
    with pytest.raises(DataError, match="data directory .*nowhere not found"):
        load_task("cola", tmp_path / "nowhere")
    (data_copy / "cola" / "dev.tsv").unlink()
    with pytest.raises(DataError, match=r"cola/dev.tsv: file not found"):
        load_task("cola", data_copy)
    with pytest.raises(DataError, match="unknown task 'mnli'"):
        load_task("mnli", data_copy)


def test_metrics_match_sklearn_definitions():
    y, p = [1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]
    # MCC = (TP·TN − FP·FN) / sqrt(...) with TP=2 TN=2 FP=1 FN=1 → 3/9 = 1/3
    assert score("cola", y, p) == pytest.approx(1 / 3)
    assert score("sst2", y, p) == pytest.approx(4 / 6)
    assert score("sara", [0, 5, 5, 56], [0, 5, 4, 56]) == pytest.approx(0.75)
    with pytest.raises(DataError, match="unlabelled"):
        score("cola", [-1, 1], [0, 1])


def test_subsample_is_reproducible():
    train = load_task("cola", SHARED_DATA)["train"]
    a, b = subsample(train, 50, 1), subsample(train, 50, 1)
    assert len(a) == 50 and list(a["idx"]) == list(b["idx"]) == sorted(a["idx"])
    assert list(subsample(train, 50, 2)["idx"]) != list(a["idx"])
    assert subsample(train, None, 1) is train
