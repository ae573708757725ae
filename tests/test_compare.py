"""python -m kdnb.compare: two runs' metrics.json, timings ignored (issue 19's before/after check)."""
import json

from kdnb.compare import differences, main

RUN = {"task": "cola", "models": {"bilstm": {"dev": 0.2176, "n_params": 10, "epoch_seconds": [1.0, 2.0]}},
       "stages_seconds": {"teacher_fine_tuning": 318.0}, "seeds": [42, 43]}


def _write(folder, metrics):
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder)


def test_timings_are_ignored_and_scores_compared(tmp_path, capsys):
    same = json.loads(json.dumps(RUN))
    same["stages_seconds"]["teacher_fine_tuning"] = 400.0
    same["models"]["bilstm"]["epoch_seconds"] = [9.0]
    assert main([_write(tmp_path / "a", RUN), _write(tmp_path / "b", same)]) == 0
    assert "identical" in capsys.readouterr().out

    other = json.loads(json.dumps(RUN))
    other["models"]["bilstm"]["dev"] = 0.2177
    other["seeds"] = [42, 44]
    del other["models"]["bilstm"]["n_params"]
    assert main([str(tmp_path / "a"), _write(tmp_path / "c", other)]) == 1
    out = capsys.readouterr().out
    assert "models.bilstm.dev: 0.2176 != 0.2177" in out and "seeds[1]: 43 != 44" in out
    assert "models.bilstm.n_params: 10 != '<missing>'" in out and "3 difference(s)" in out
    assert differences(RUN, other, tol=1e-3) == [("models.bilstm.n_params", 10, "<missing>"), ("seeds[1]", 43, 44)]
    assert differences({"x": True}, {"x": 1}) == [] and differences({"x": float("nan")}, {"x": float("nan")}) == []


def test_missing_or_broken_files_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path / "nope")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{oops")
    assert main([str(tmp_path / "bad"), str(tmp_path / "bad")]) == 2
    assert "not valid JSON (line 1" in capsys.readouterr().err
