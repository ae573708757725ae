"""Property-based tests (hypothesis): random TSV rows, label-name files, parameter overrides and
``--set`` items give a clean load or kdnb's own error naming the file+line or key, never
another exception."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdnb.config import load_config
from kdnb.data import TASKS, _label_names, read_split
from kdnb.errors import ConfigError, DataError, KdnbError
from kdnb.pipeline import parse_overrides

FAST = settings(max_examples=60, deadline=None, derandomize=True)

# cells: tabs and newlines are the separators, so they are drawn as cells' neighbours, not inside
_CELL = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "56", "57", "²", "٣", "", " ", "entailment", "not_entailment",
                     "sentence", "label", "index", "sentence1", "sentence2", "gj04", "*", "\r"]),
    st.text(alphabet=st.characters(blacklist_characters="\t\n", blacklist_categories=("Cs",)), max_size=12),
)
_ROW = st.lists(_CELL, min_size=0, max_size=6).map("\t".join)
_FILE = st.lists(_ROW, min_size=0, max_size=8).map(lambda rows: "\n".join(rows))
_SPLITS = [(t, s) for t, spec in TASKS.items() for s in spec.files]


def _names(task):
    spec = TASKS[task]
    return spec.label_names or tuple(f"intent_{i}" for i in range(57))


@FAST
@given(split=st.sampled_from(_SPLITS), body=_FILE, header=st.booleans(), raw=st.binary(max_size=6))
def test_random_tsv_rows_load_cleanly_or_raise_data_error_naming_file_and_line(split, body, header, raw):
    task, name = split
    spec, fs = TASKS[task], TASKS[task].files[split[1]]
    if header and fs.header:  # half the time a valid header, so that the rows themselves get parsed
        body = "\t".join(fs.header) + "\n" + body
    data = body.encode() + (raw if raw and raw[0] >= 0x80 else b"")  # sometimes a non-UTF-8 tail
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / fs.name
        path.write_bytes(data)
        try:
            cols = read_split(path, fs, spec, _names(task))
        except DataError as e:
            assert str(e).startswith(str(path)), e
            assert re.match(rf"{re.escape(str(path))}(, line \d+)?: ", str(e)), e
            return
    n = len(cols["idx"])
    assert n > 0 and all(len(v) == n for v in cols.values())
    assert all(s.strip() == s and s for s in cols["sentence"])
    labels = np.array(cols["label"])
    assert ((labels >= 0) & (labels < len(_names(task)))).all() or (fs.label_col is None and (labels == -1).all())


@FAST
@given(rows=st.lists(_ROW, max_size=6))
def test_random_label_name_files_load_cleanly_or_raise_data_error(rows):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "int_to_intent.tsv"
        path.write_text("\n".join(rows))
        try:
            names = _label_names(TASKS["sara"], Path(d))
        except DataError as e:
            assert str(e).startswith(str(path)), e
            return
    assert names and all(n.strip() == n and n for n in names)


_KNOWN = ["seed", "train_limit", "teacher.epochs", "teacher.learning_rate", "teacher.batch_size",
          "bilstm.hidden_size", "bilstm.loss", "bilstm.epochs", "bert_student.num_layers", "bert_student.enabled",
          "augment.transfer_set", "augment.rules.n_iter", "probing.tasks", "analysis.optuna_trials"]
_KEY = st.one_of(st.sampled_from(_KNOWN), st.sampled_from(_KNOWN).map(lambda k: k + ".x"),
                 st.sampled_from(["teacher", "bilstm", "augment"]),
                 st.text(alphabet="abcdefghij_.", min_size=1, max_size=12))
_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text("abc", min_size=1, max_size=3),
                                                                           inner, max_size=3)),
    max_leaves=5)


@settings(max_examples=25, deadline=None, derandomize=True)  # load_config: ≈ 0.3 s each
@given(overrides=st.dictionaries(_KEY, _VALUE, max_size=4))
def test_random_overrides_merge_cleanly_or_raise_config_error_naming_the_key(overrides):
    try:
        cfg = load_config("cola", "smoke", overrides=overrides)
    except ConfigError as e:
        assert "'" in str(e) or "--set" in str(e), e  # a quoted key or value is named
        return
    for k, v in overrides.items():  # a clean load applied every override
        obj = cfg
        for part in k.split("."):
            obj = getattr(obj, part)
        assert obj == v or (isinstance(v, int) and obj == float(v)) or isinstance(v, dict)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(items=st.lists(st.text(max_size=20), max_size=4))
def test_random_set_items_parse_or_raise_config_error(items):
    try:
        out = parse_overrides(items)
    except ConfigError as e:
        assert str(e).startswith("--set "), e
        return
    assert all("=" in i for i in items) and len(out) <= len(items)


def test_the_project_errors_are_kdnb_errors():  # what the properties above accept as "own" errors
    assert issubclass(DataError, KdnbError) and issubclass(ConfigError, KdnbError)
    with pytest.raises(DataError):
        read_split(Path("/nonexistent.tsv"), TASKS["cola"].files["train"], TASKS["cola"], _names("cola"))
