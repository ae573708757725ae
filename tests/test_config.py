import pytest
import yaml

from kdnb.config import PACKAGED_TEACHER, known_profiles, known_tasks, load_config
from kdnb.errors import ConfigError


def test_tasks_and_profiles_exist():
    assert {"cola", "sst2", "sara"} <= set(known_tasks())
    assert {"cpu", "smoke", "thesis"} <= set(known_profiles())


def test_thesis_settings_and_profile_merge():
    thesis = load_config("cola", "thesis")
    assert thesis.teacher.model_name_or_path == "bert-large-uncased"
    assert (thesis.teacher.learning_rate, thesis.teacher.epochs, thesis.teacher.batch_size) == (5e-5, 3, 36)
    assert thesis.teacher.warmup_fraction == 0.1 and thesis.teacher.max_length == 128
    assert (thesis.bilstm.hidden_size, thesis.bilstm.fc_size, thesis.bilstm.batch_size) == (300, 400, 50)
    assert thesis.mixed_precision == "bf16"
    assert load_config("sara", "thesis").teacher.epochs == 10
    cpu = load_config("cola", "cpu")
    assert cpu.teacher.model_name_or_path == PACKAGED_TEACHER
    # the profile overrides only what it names; the rest stays the task's thesis setting
    assert cpu.teacher.learning_rate == thesis.teacher.learning_rate
    assert cpu.out.name == "cola"
    smoke = load_config("cola", "smoke")
    assert smoke.out.name == "cola-smoke" and smoke.train_limit is not None


def test_overrides_and_data_dir():
    cfg = load_config("sst2", "smoke", data_dir="/some/where", overrides={"teacher.epochs": 2, "seed": 7})
    assert cfg.teacher.epochs == 2 and cfg.seed == 7
    assert str(cfg.data_path) == "/some/where"


def test_int_is_accepted_for_float_keys():
    assert load_config("cola", "smoke", overrides={"teacher.learning_rate": 1}).teacher.learning_rate == 1.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"teacher.epoch": 3}, "unknown key 'teacher.epoch'"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"teacher": 5}, "'teacher' must be a mapping"),
        ({"teacher.epochs": 0}, "'teacher.epochs': must be > 0"),
        ({"teacher.epochs": "3"}, "'teacher.epochs': expected int"),
        ({"teacher.warmup_fraction": 1.5}, "'teacher.warmup_fraction'"),
        ({"bilstm.embedding_mode": "frozen"}, "'bilstm.embedding_mode': must be one of"),
        ({"mixed_precision": "fp8"}, "'mixed_precision'"),
        ({"cuda_graphs": "yes"}, "'cuda_graphs'"),
        ({"bert_student.method": "distil"}, "'bert_student.method': must be one of .*alpha_mix"),
    ],
)
def test_bad_values_are_rejected_with_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("cola", "cpu", overrides=overrides)


def test_unknown_task_and_profile():
    with pytest.raises(ConfigError, match="unknown task 'colla'.*Known tasks: .*cola"):
        load_config("colla", "cpu")
    with pytest.raises(ConfigError, match="unknown profile 'gpu'"):
        load_config("cola", "gpu")


def test_unknown_key_in_a_file_names_the_file(tmp_path, monkeypatch):
    import kdnb.config as C

    params = tmp_path / "params"
    (params / "profiles").mkdir(parents=True)
    (params / "cola.yaml").write_text("task: cola\nteacher:\n  learning_rte: 1.0e-5\n")
    (params / "profiles" / "cpu.yaml").write_text("{}\n")
    monkeypatch.setattr(C, "PARAMS_DIR", params)
    monkeypatch.setattr(C, "PROJECT_ROOT", tmp_path)
    with pytest.raises(ConfigError, match=r"params/cola.yaml: unknown key 'teacher.learning_rte'"):
        C.load_config("cola", "cpu")


def test_merged_config_is_saved(smoke_cfg):
    path = smoke_cfg.save()
    saved = yaml.safe_load(path.read_text())
    assert saved["task"] == "cola" and saved["profile"] == "smoke"
    assert saved["teacher"]["epochs"] == smoke_cfg.teacher.epochs
    assert smoke_cfg.section_hash("teacher") != load_config(
        "cola", "smoke", overrides={"teacher.epochs": 5}).section_hash("teacher")


def test_profile_extends_another(tmp_path, monkeypatch):
    import kdnb.config as C

    params = tmp_path / "params"
    (params / "profiles").mkdir(parents=True)
    (params / "cola.yaml").write_text("task: cola\nteacher:\n  epochs: 3\n  batch_size: 36\n")
    (params / "profiles" / "cpu.yaml").write_text("teacher:\n  epochs: 2\n  batch_size: 8\n")
    (params / "profiles" / "more.yaml").write_text("extends: cpu\nteacher:\n  epochs: 5\n")
    (params / "profiles" / "loop.yaml").write_text("extends: loop2\n")
    (params / "profiles" / "loop2.yaml").write_text("extends: loop\n")
    (params / "profiles" / "bad.yaml").write_text("extends: gpu\n")
    monkeypatch.setattr(C, "PARAMS_DIR", params)
    monkeypatch.setattr(C, "PROJECT_ROOT", tmp_path)
    cfg = C.load_config("cola", "more")
    assert (cfg.teacher.epochs, cfg.teacher.batch_size) == (5, 8)
    with pytest.raises(ConfigError, match="cycle"):
        C.load_config("cola", "loop")
    with pytest.raises(ConfigError, match="unknown profile 'gpu'"):
        C.load_config("cola", "bad")


@pytest.mark.parametrize("profile", ["thesis", "cpu", "ablation", "kdzoo"])
@pytest.mark.parametrize("task", ["cola", "sst2", "sara", "rte"])
def test_rule_augmentation_n_iter_per_task(task, profile):
    # Tang et al. (2019, §4) draw n_iter = 20 samples per sentence for SST-2 (and the small
    # sets); no task file nor any real-data profile may lower it (smoke's 5 is for seconds only).
    assert load_config(task, profile).augment.rules.n_iter == 20
    assert load_config(task, "smoke").augment.rules.n_iter == 5
