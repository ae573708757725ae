import pytest
import yaml

from kdnb.config import PACKAGED_TEACHER, known_profiles, known_tasks, load_config
from kdnb.errors import ConfigError


def test_tasks_and_profiles_exist():
    assert {"cola", "sst2", "sara"} <= set(known_tasks())
    assert {"cpu", "smoke", "thesis", "gpu"} <= set(known_profiles())


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
    # the profile overrides only what it names (here the learning rate); the rest stays the task's
    assert cpu.teacher.learning_rate == 1e-4 and cpu.teacher.warmup_fraction == thesis.teacher.warmup_fraction
    assert (cpu.bilstm.hidden_size, cpu.bilstm.rho, cpu.bilstm.loss) == (300, 0.95, "mse_sum")
    assert cpu.out.name == "cola"
    smoke = load_config("cola", "smoke")
    assert smoke.out.name == "cola-smoke" and smoke.train_limit is not None


@pytest.mark.parametrize("task", ["cola", "sst2", "sara"])
def test_gpu_profile_is_the_thesis_without_a_hub(task):
    """params/profiles/gpu.yaml (issue 16): the packaged teacher and a scratch GPT-2 instead of
    the hub models, the thesis' hyperparameters, bf16, CUDA graphs, an 800k transfer set."""
    gpu, thesis = load_config(task, "gpu"), load_config(task, "thesis")
    t = gpu.teacher
    assert t.model_name_or_path == PACKAGED_TEACHER and thesis.teacher.model_name_or_path == "bert-large-uncased"
    assert (t.learning_rate, t.batch_size, t.max_length) == (5e-5, 36, 128)
    assert t.epochs == (10 if task == "sara" else 3)
    g = gpu.augment.gpt2
    assert gpu.augment.transfer_set == "gpt2" and g.model_name_or_path == "scratch" and g.n_sentences == 800_000
    cpu_g = load_config(task, "cpu").augment.gpt2
    assert g.scratch_n_layer * g.scratch_n_embd > cpu_g.scratch_n_layer * cpu_g.scratch_n_embd  # larger than cpu's
    assert g.epochs == {"cola": 10, "sst2": 3, "sara": 20}[task]
    b, s = gpu.bilstm, gpu.bert_student
    assert (b.epochs, b.batch_size, b.max_length, b.loss) == (30, 50, 128, "mse_sum")  # eq. 2 as written
    assert s.enabled and (s.num_layers, s.hidden_size, s.intermediate_size, s.num_heads) == (5, 204, 750, 3)
    assert (s.epochs, s.batch_size, s.loss, s.temperature) == (60, 256, "ce", 3.0)
    assert (gpu.mixed_precision, gpu.cuda_graphs, gpu.num_workers) == ("bf16", True, 4)
    assert gpu.out.name == f"{task}-gpu" and gpu.analysis.optuna_trials == 0


def test_overrides_and_data_dir():
    cfg = load_config("sst2", "smoke", data_dir="/some/where", overrides={"teacher.epochs": 2, "seed": 7})
    assert cfg.teacher.epochs == 2 and cfg.seed == 7
    assert str(cfg.data_path) == "/some/where"


def test_int_is_accepted_for_float_keys():
    lr = load_config("cola", "smoke", overrides={"teacher.learning_rate": 1}).teacher.learning_rate
    assert lr == 1.0 and isinstance(lr, float)  # stored as a float: the saved config and its hashes see 1.0


def test_sections_are_pydantic_dataclasses_that_keep_dataclass_tools():
    import dataclasses

    import pydantic

    cfg = load_config("cola", "smoke")
    assert pydantic.dataclasses.is_pydantic_dataclass(type(cfg.teacher))
    assert dataclasses.replace(cfg.teacher, epochs=2).epochs == 2 and dataclasses.asdict(cfg)["teacher"]["epochs"]
    with pytest.raises(pydantic.ValidationError):  # built directly, a section still validates
        dataclasses.replace(cfg.teacher, epochs=0)


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
        ({"seeds": [1, 1]}, r"'seeds': must list distinct values, got \[1, 1\]"),
        ({"seeds": ["a"]}, "'seeds': expected int, got 'a'"),
        ({"seeds": 3}, "'seeds': expected list, got 3"),
        ({"augment.size_ablation": [0, -5]}, "'augment.size_ablation': must be >= 0, got -5"),
        ({"bilstm.loss": "l1"}, "'bilstm.loss': must be one of mse, mse_sum, kl, ce; got 'l1'"),
        ({"teacher.warmup_fraction": 1.0}, r"'teacher.warmup_fraction': must be in \[0, 1\), got 1.0"),
        ({"augment.gpt2.top_p": 0.0}, r"'augment.gpt2.top_p': must be in \(0, 1\], got 0.0"),
        ({"probing.dropouts": [0.1, 1.0]}, r"'probing.dropouts': must be in \[0, 1\), got 1.0"),
        ({"probing.hidden_sizes": []}, r"'probing.hidden_sizes': must not be empty"),
        ({"kd_ablation.methods": ["mse", "pkd", "tiny"]}, "'kd_ablation.methods': must be one of mse, kl, alpha_mix"),
        ({"teacher.epochs": True}, "'teacher.epochs': expected int, got True"),
        ({"teacher.learning_rate": "1e-5"}, "'teacher.learning_rate': expected float, got '1e-5'"),
    ],
)
def test_bad_values_are_rejected_with_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("cola", "cpu", overrides=overrides)


def test_unknown_task_and_profile():
    with pytest.raises(ConfigError, match="unknown task 'colla'.*Known tasks: .*cola"):
        load_config("colla", "cpu")
    with pytest.raises(ConfigError, match="unknown profile 'tpu'"):
        load_config("cola", "tpu")


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


def test_student_seeds_and_with_seed():
    cfg = load_config("cola", "cpu")
    assert cfg.student_seeds == [cfg.seed]
    three = load_config("cola", "cpu", overrides={"seeds": [42, 43, 44]})
    assert three.student_seeds == [42, 43, 44]
    other = three.with_seed(43)
    assert other.seed == 43 and three.seed == 42 and other.out == three.out
    # the teacher's reuse key does not see the students' seeds
    assert three.section_hash("task", "seed", "train_limit", "teacher") == cfg.section_hash(
        "task", "seed", "train_limit", "teacher")


@pytest.mark.parametrize("profile", ["thesis", "cpu", "ablation", "kdzoo"])
@pytest.mark.parametrize("task", ["cola", "sst2", "sara", "rte"])
def test_rule_augmentation_n_iter_per_task(task, profile):
    # Tang et al. (2019, §4) draw n_iter = 20 samples per sentence for SST-2 (and the small
    # sets); no task file nor any real-data profile may lower it (smoke's 5 is for seconds only).
    assert load_config(task, profile).augment.rules.n_iter == 20
    assert load_config(task, "smoke").augment.rules.n_iter == 5


@pytest.mark.parametrize("task, profile", [("cola", "smoke"), ("rte", "peakd"), ("sst2", "thesis"), ("sara", "explore")])
def test_a_saved_config_reads_back_to_the_same_parameters(tmp_path, task, profile):
    from kdnb.config import read_config, run_config

    cfg = load_config(task, profile, overrides={"teacher.learning_rate": 1, "seeds": [1, 2]})
    path = cfg.save(tmp_path / "config.yaml")
    back = read_config(path)
    assert back == cfg and back.section_hash("teacher", "bilstm") == cfg.section_hash("teacher", "bilstm")
    assert run_config(str(path), task, profile) == cfg  # what each notebook of a pipeline run reads
    assert run_config(None, task, profile) == load_config(task, profile)  # JupyterLab / nbval: merged here


def test_a_bad_saved_config_names_the_file_and_key(tmp_path):
    from kdnb.config import read_config, run_config

    path = load_config("cola", "smoke").save(tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="the notebook runs 'sst2'"):
        run_config(path, "sst2", "smoke")
    path.write_text(path.read_text().replace("  epochs: 1\n", "  epochs: 0\n", 1))
    with pytest.raises(ConfigError, match=r"config.yaml: key '\w+.epochs': must be > 0, got 0"):
        read_config(path)
    path.write_text("task: cola\nprofile: smoke\nteacher:\n  epoch: 1\n")
    with pytest.raises(ConfigError, match=r"config.yaml: unknown key 'teacher.epoch'"):
        read_config(path)
    with pytest.raises(ConfigError, match="no such file"):
        read_config(tmp_path / "missing.yaml")
