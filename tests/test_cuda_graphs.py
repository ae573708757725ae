"""kdnb.training.fit.CUDAGraphStep: graph captures that a DataLoader's pin-memory thread cannot break
(issue 16).

On one H200 (``../shared/measurements/2026-12-01_h200/``) a capture in PyTorch's default
``capture_error_mode="global"`` met the pin-memory thread of a 4-worker pinned loader and the
run died with ``cudaErrorStreamCaptureUnsupported``. The CPU tests drive the step's logic with
``torch.cuda``'s graph API replaced by recorders; the GPU tests (skipped without CUDA) capture
new batch shapes while a multi-worker pinned loader runs, directly and through ``fit``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from kdnb.training.fit import CAPTURE_ERROR_MODE, CUDAGraphStep, fit, make_accelerator

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ---- CPU: the step's logic with torch.cuda's graph API recorded -------------------------------
class _FakeStream:
    def wait_stream(self, other) -> None:
        pass


class _FakeGraph:
    def __init__(self):
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1


@pytest.fixture
def fake_cuda(monkeypatch):
    """``torch.cuda`` as far as CUDAGraphStep uses it, on the CPU; returns the list of
    ``torch.cuda.graph(...)`` calls (their keyword arguments). ``fail_next`` makes the next
    capture raise as an op that syncs would."""
    calls: list[dict] = []
    state = {"fail_next": False}

    @contextlib.contextmanager
    def graph(g, **kwargs):
        calls.append(kwargs)
        if state["fail_next"]:
            state["fail_next"] = False
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        yield

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Stream", _FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: _FakeStream())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    return calls, state


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for g in opt.param_groups:  # CUDAGraphStep asks for a capturable optimiser
        g["capturable"] = True
    return model, opt


def _batch(n: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 4, generator=g), "y": torch.randn(n, 1, generator=g)}


def _loss(m, b):
    return torch.nn.functional.mse_loss(m(b["x"]), b["y"])


def test_capture_mode_is_thread_local():
    """The constant the captures use: only the capturing thread's CUDA calls are checked."""
    assert CAPTURE_ERROR_MODE == "thread_local"


def test_each_new_shape_is_captured_once_in_thread_local_mode(fake_cuda):
    calls, _ = fake_cuda
    model, opt = _model_and_opt()
    step = CUDAGraphStep(model, _loss, opt)
    w0 = model.weight.detach().clone()
    step(_batch(8))  # the first step is eager: the optimiser's state exists before any capture
    assert step.captures == 0 and calls == []
    assert not torch.equal(model.weight, w0)  # that eager step trained
    for n in (8, 16, 8, 24, 16, 8):
        step(_batch(n))
    assert step.captures == 3 and len(step.graphs) == 3  # shapes 8, 16, 24: once each
    assert [c.get("capture_error_mode") for c in calls] == ["thread_local"] * 3
    assert sum(g.replays for g, _, _ in step.graphs.values()) == 6  # every later step replays
    assert step.steps == 7 and step.eager_reason is None


def test_a_failed_capture_falls_back_to_eager_steps(fake_cuda, capsys):
    calls, state = fake_cuda
    model, opt = _model_and_opt()
    step = CUDAGraphStep(model, _loss, opt)
    step(_batch(8))
    state["fail_next"] = True
    w = model.weight.detach().clone()
    loss = step(_batch(8, seed=1))
    assert step.eager_reason is not None and "stream is capturing" in step.eager_reason
    assert "capture failed, eager steps from here" in capsys.readouterr().out
    assert torch.isfinite(loss) and not torch.equal(model.weight, w)  # the step still trained, eagerly
    step(_batch(16))
    assert len(calls) == 1 and step.captures == 0  # no capture tried after the fallback


def test_a_batch_value_that_is_no_tensor_is_refused(fake_cuda):
    model, opt = _model_and_opt()
    step = CUDAGraphStep(model, _loss, opt)
    step(_batch(8))
    with pytest.raises(ValueError, match="every value of a batch must be a tensor"):
        step({**_batch(8), "ids": [1, 2]})


# ---- GPU: captures while a multi-worker pinned loader pins ------------------------------------
class _Lengths(Dataset):
    """Rows ``x (length, 64)`` whose length cycles over 8, 16, ..., 8·n_shapes, so that a batch
    of ``batch`` consecutive rows has one length and the first batches are all new shapes; the
    rows are large enough (up to 64 KB each) that pinning a batch keeps the pin thread busy."""

    def __init__(self, n_shapes: int, batch: int, repeats: int):
        self.n_shapes, self.batch, self.n = n_shapes, batch, n_shapes * batch * repeats

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        length = 8 * (1 + (i // self.batch) % self.n_shapes)
        g = torch.Generator().manual_seed(i)
        return {"x": torch.randn(length, 64, generator=g), "y": torch.randn(1, generator=g)}


def _collate(rows: list[dict]) -> dict:
    """``x (batch, longest, 64)`` zero-padded, ``y (batch, 1)``."""
    x = torch.nn.utils.rnn.pad_sequence([r["x"] for r in rows], batch_first=True)
    return {"x": x, "y": torch.stack([r["y"] for r in rows])}


def _seq_loss(m, b):
    return torch.nn.functional.mse_loss(m(b["x"]).mean(dim=(1, 2)), b["y"][:, 0])


@needs_cuda
def test_gpu_captures_new_shapes_while_a_pinned_multi_worker_loader_runs():
    """32 new batch shapes captured while 4 workers feed a pin-memory thread (the H200 crash:
    ``cudaErrorStreamCaptureUnsupported`` in ``pin_memory``); every capture succeeds and the
    graphed steps train as eager ones do."""
    n_shapes, batch = 32, 64
    data = _Lengths(n_shapes, batch, repeats=3)
    weights = []
    for graphs in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 64)).cuda()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
        step = CUDAGraphStep(model, _seq_loss, opt) if graphs else None
        loader = DataLoader(data, batch_size=batch, shuffle=False, collate_fn=_collate, num_workers=4,
                            pin_memory=True, prefetch_factor=4, persistent_workers=False)
        for b in loader:
            b = {k: v.cuda(non_blocking=True) for k, v in b.items()}
            if graphs:
                step(b)
            else:
                _seq_loss(model, b).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if graphs:
            assert step.eager_reason is None, step.eager_reason
            assert step.captures == n_shapes  # the first batch (eager) has the shape of the 33rd
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-4)


@needs_cuda
def test_gpu_fit_with_cuda_graphs_and_four_pinned_workers(tmp_path):
    """The pipeline's path: ``fit(cuda_graphs=True, num_workers=4)`` pins in a thread while it
    captures each new shape; no capture fails."""
    n_shapes, batch = 16, 32
    data = _Lengths(n_shapes, batch, repeats=4)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    # length-grouped batches of one length each: lengths make LengthGroupedSampler group them
    lengths = [8 * (1 + (i // batch) % n_shapes) for i in range(len(data))]
    res = fit(model, train_set=data, collate_fn=_collate, batch_size=batch, loss_fn=_seq_loss, optimizer=opt,
              epochs=2, evaluate=lambda m: 0.0, seed=0, ckpt_dir=tmp_path / "ckpt", accelerator=make_accelerator(),
              lengths=lengths, num_workers=4, pin_memory=True, cuda_graphs=True, select_best=None)
    assert res.cuda_graphs is not None and res.cuda_graphs["eager_reason"] is None, res.cuda_graphs
    assert res.cuda_graphs["captures"] >= 2
