"""Bad inputs not covered elsewhere, each giving kdnb's own error naming the file+line or key, and
a notebook that fails mid-run: exit 1 and nothing half-written under outputs/ or the figures."""

from __future__ import annotations

import pytest

from kdnb.data import load_task
from kdnb.errors import ConfigError, DataError, KdnbError
from kdnb.pipeline import main, parse_overrides
from kdnb.stages import stage


@pytest.mark.parametrize("task, name, message", [
    ("cola", "train.tsv", r"cola/train.tsv: no data rows"),                          # no header expected
    ("sst2", "dev.tsv", r"sst2/dev.tsv, line 1: expected header 'sentence<TAB>label', got ''"),
    ("sara", "int_to_intent.tsv", r"sara/int_to_intent.tsv: no label names"),
])
def test_an_empty_tsv_names_the_file(data_copy, task, name, message):
    (data_copy / task / name).write_bytes(b"")
    with pytest.raises(DataError, match=message):
        load_task(task, data_copy)


def test_non_utf8_bytes_name_file_and_line(data_copy):
    path = data_copy / "sst2" / "train.tsv"
    lines = path.read_bytes().split(b"\n")
    lines[41] = b"caf\xe9 au lait\t1"  # Latin-1, not UTF-8
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"sst2/train.tsv, line 42: not UTF-8 text \(byte b'\\xe9'"):
        load_task("sst2", data_copy)


def test_a_missing_task_folder_names_folder_and_data_dir(data_copy, capsys, tmp_path):
    import shutil

    shutil.rmtree(data_copy / "sara")
    with pytest.raises(DataError, match=rf"{data_copy / 'sara'}: task folder not found in data directory"):
        load_task("sara", data_copy)
    rc = main(["--task", "sara", "--profile", "smoke", "--data-dir", str(data_copy),
               "--set", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "sara: task folder not found" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("line3, message", [
    ("2 greet", r"line 3: expected 'label_id<TAB>intent_name', got '2 greet'"),  # no tab
    ("x\tgreet", r"line 3: expected 'label_id<TAB>intent_name'"),                 # id not a number
    ("²\tgreet", r"line 3: expected 'label_id<TAB>intent_name'"),                 # isdigit(), not an int
    ("2\t ", r"line 3: expected 'label_id<TAB>intent_name'"),                     # no name
    ("1\tgreet", r"line 3: label id 1 is named twice"),
    ("99\tgreet", r"label ids must be 0..56 without gaps"),
])
def test_a_malformed_int_to_intent_names_file_and_line(data_copy, line3, message):
    path = data_copy / "sara" / "int_to_intent.tsv"
    lines = path.read_text().splitlines()
    lines[2] = line3
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"sara/int_to_intent.tsv(, line \d+)?: " if "gaps" in message else
                       r"sara/int_to_intent.tsv, " + message):
        load_task("sara", data_copy)
    with pytest.raises(DataError, match=message):
        load_task("sara", data_copy)


@pytest.mark.parametrize("items, message", [
    (["teacher.epochs"], "--set 'teacher.epochs': expected KEY=VALUE"),
    (["=3"], "--set '=3': no key before '='"),
    (["bilstm.loss=[kl"], "--set 'bilstm.loss=[kl': key 'bilstm.loss': the value is not valid YAML"),
])
def test_set_without_a_key_value_pair_is_a_config_error(items, message, tmp_path, capsys):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_overrides(items)
    rc = main(["--task", "cola", "--profile", "smoke", "--set", f"output_dir={tmp_path / 'out'}", *items])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("kdnb: error: " + message) and not (tmp_path / "out").exists()


def test_overrides_that_set_inside_a_value_name_the_key():
    from kdnb.config import load_config

    with pytest.raises(ConfigError, match=r"key 'teacher.epochs' sets inside 'teacher'"):
        load_config("cola", "smoke", overrides={"teacher": None, "teacher.epochs": 2})


def _half_written(root):
    """Temporaries of atomic_path (``.<name>.*.tmp``), set-aside directories, partial notebooks."""
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".old")) or p.name.startswith(".")]


def test_a_notebook_failing_mid_run_exits_1_and_leaves_nothing_half_written(tmp_path, capsys):
    out, fig = tmp_path / "out", tmp_path / "thesis_figures"
    # notebook 01 succeeds and writes its tables and figures; 04 then fails inside (no transfer
    # set): the teacher's products are there, so the pipeline's check of its inputs lets it start
    (out / "teacher" / "model").mkdir(parents=True)
    for product in stage("teacher").products:
        if not (out / product).exists():
            (out / product).write_text("{}")
    rc = main(["--task", "cola", "--profile", "smoke", "--only", "01", "04",
               "--set", f"output_dir={out}", f"figures_dir={fig}"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "notebook 04_students.ipynb failed with StageInputError" in err and "transfer" in err
    assert sorted(p.name for p in (out / "notebooks").iterdir()) == ["01_data_prep.ipynb"]
    assert not (out / "students").exists() and not (out / "notebooks" / "04_students.ipynb").exists()
    assert _half_written(out) == [] and (not fig.exists() or _half_written(fig) == [])
    assert (out / "data_stats.csv").exists() and any(fig.glob("*.png"))  # the finished notebook's are kept


@pytest.mark.parametrize("only", [["students"], ["04"], ["05_probing", "analysis"]])
def test_a_stage_run_alone_without_the_teacher_exits_2_before_anything_runs(only, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["--task", "cola", "--profile", "smoke", "--only", *only, "--set", f"output_dir={out}",
               f"figures_dir={tmp_path / 'fig'}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "reads what stage(s) teacher write" in err and "teacher/result.json" in err
    # the smoke profile labels rule-based sentences: the teacher needs notebook 02 in turn
    assert f"--only augment teacher {' '.join(s for s in ('students', 'probing', 'analysis') if s in err)}" in err
    assert not out.exists()


def test_the_teacher_alone_needs_notebook_02_only_when_its_transfer_set_is_augmented(tmp_path):
    from kdnb.config import load_config
    from kdnb.pipeline import _check_inputs
    from kdnb.stages import select

    over = {"output_dir": str(tmp_path / "out")}
    with pytest.raises(KdnbError, match=r"reads what stage\(s\) augment write.*augmentation_lengths.csv is missing"
                       r".*--only augment teacher\)"):
        _check_inputs(select(["teacher"]), load_config("cola", "smoke", overrides=over))
    _check_inputs(select(["teacher"]), load_config("cola", "smoke", overrides={
        **over, "augment.transfer_set": "none", "augment.ablation": False}))  # the training set alone
    _check_inputs(select(["augment", "teacher"]), load_config("cola", "smoke", overrides=over))


def test_an_unknown_stage_names_the_stages(tmp_path, capsys):
    rc = main(["--task", "cola", "--profile", "smoke", "--only", "teachers", "--set", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown stage 'teachers'" in err and "03 teacher" in err and "04 students" in err
