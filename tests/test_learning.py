"""kdnb.analysis.learning: the table the smoke notebooks check tells a learning model from a one-class one."""

from __future__ import annotations

import dataclasses

import numpy as np

from kdnb.analysis.learning import learning_table
from kdnb.training.teacher import write_predictions


class _Rows(dict):
    def __init__(self, labels):
        super().__init__(idx=list(range(len(labels))), label=list(labels))


def _logits(pred):
    return np.eye(2, dtype=np.float32)[np.asarray(pred)] * 2 - 1


def test_a_one_class_student_has_not_learned_and_a_distilled_one_follows_the_teacher(smoke_cfg):
    cfg = dataclasses.replace(smoke_cfg, task="sst2")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    y[:40] = 1                                                   # majority class 1
    teacher = np.where(rng.random(200) < 0.85, y, 1 - y)        # ≈ 85 % accuracy
    student = np.where(rng.random(200) < 0.9, teacher, 1 - teacher)
    write_predictions(_Rows(y), _logits(teacher), cfg.out / "teacher" / "dev_predictions.csv")
    write_predictions(_Rows(y), _logits(student), cfg.out / "students" / "bilstm" / "dev_predictions.csv")
    write_predictions(_Rows(y), _logits(np.ones(200, int)), cfg.out / "students" / "lazy" / "dev_predictions.csv")
    t = learning_table(cfg).set_index("model")
    assert list(t.index) == ["teacher", "bilstm", "lazy"]
    majority = 100 * (y == 1).mean()
    assert (t["majority (%)"] == round(majority, 1)).all()
    assert t.loc["teacher", "accuracy (%)"] == round(100 * (teacher == y).mean(), 1)
    assert t["learned"].tolist() == [True, True, False]
    assert t.loc["lazy", "agreement (%)"] == t.loc["lazy", "majority agreement (%)"] == round(100 * (teacher == 1).mean(), 1)
    assert t["follows teacher"].tolist() == [True, True, False]
    only = learning_table(cfg, models=["lazy"])
    assert only["model"].tolist() == ["teacher", "lazy"]


def test_a_one_class_teacher_is_flagged(smoke_cfg):
    y = np.array([0, 1] * 50)
    write_predictions(_Rows(y), _logits(np.zeros(100, int)), smoke_cfg.out / "teacher" / "dev_predictions.csv")
    t = learning_table(smoke_cfg)
    assert t["MCC (%)"].tolist() == [0.0] and t["learned"].tolist() == [False]
    assert t["follows teacher"].tolist() == [False]  # the majority predictor agrees 100 % with it
