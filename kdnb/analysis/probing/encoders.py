"""Probing encoders: mean-pooled hidden states per layer of the teacher and BERT students, the
BiLSTM's final states; features cached per encoder and task.
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ... import store
from ...config import Config
from ...errors import ConfigError, StageInputError
from ...utils import atomic_path, set_seed
from .data import SPLITS, ProbingData

# ---------------------------------------------------------------------------------------------
# Representations
# ---------------------------------------------------------------------------------------------

EmbedFn = Callable[[list[str], list[str]], dict[str, np.ndarray]]
"""``embed(sentences, layers) -> {layer: (N, D) float32}``."""


@dataclass
class Encoder:
    """A model to probe: turns sentences into one vector per layer.

    Add an entry to the dict of :func:`default_encoders` (or pass your own dict to
    :func:`run_probing`) to probe another model.

    Attributes:
        name: row label, e.g. ``teacher``, ``teacher (pre-trained)``, ``bilstm (initialised)``.
        family: ``teacher`` or the student's name (``bilstm``); figures pair states by it.
        state: ``fine-tuned`` / ``pre-trained`` (teacher), ``trained`` / ``initialised`` (students).
        layers: layer labels in depth order (``E``, ``1``, ... for BERT; ``final`` for the BiLSTM).
        key: identifies the weights; cached features are reused only while it is unchanged.
        embed: ``(sentences, layers) -> {layer: (N, D) float32 array}``; loads the model lazily.
        n_layers: the model's depth (Transformer layers; 1 for the BiLSTM) for the relative
            depth of a layer (``layer / n_layers``; ``final`` → 1); None: the deepest probed layer.
    """

    name: str
    family: str
    state: str
    layers: list[str]
    key: str
    embed: EmbedFn
    n_layers: Optional[int] = None

    def relative_depth(self, layer: str) -> float:
        """Position of ``layer`` in the model, 0 (``E``) … 1 (the last layer; ``final``)."""
        if layer == "final":
            return 1.0
        deepest = self.n_layers or max((layer_index(l) for l in self.layers if l != "final"), default=1) or 1
        return layer_index(layer) / deepest


def layer_label(index: int) -> str:
    """``0`` (the embedding output) → ``E``; ``k`` → ``"k"``."""
    return "E" if index == 0 else str(index)


def layer_index(label: str) -> int:
    """Inverse of :func:`layer_label`."""
    return 0 if label == "E" else int(label)


def spread_layers(n_layers: int) -> list[int]:
    """The thesis' choice of BERT layers to probe, for any depth: the embedding layer (0 = E),
    layer 1, and the layers at 1/4, 1/2, 3/4 and all of the depth (rounded half up).

    BERT-large (24) → ``[0, 1, 6, 12, 18, 24]`` (the layers plotted by Sučík 2020);
    12 → ``[0, 1, 3, 6, 9, 12]``; 6 (the CPU teacher) → ``[0, 1, 2, 3, 5, 6]``.
    """
    picks = {0, min(1, n_layers)} | {int(n_layers * k / 4 + 0.5) for k in range(1, 5)}
    return sorted(p for p in picks if 0 <= p <= n_layers)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Run tiny CPU matrix products on one thread (restored afterwards): for a probe's
    ``(64, D) × (D, ≤ 9·200)`` products, thread synchronisation costs more than it saves,
    and far more on a busy machine."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@torch.inference_mode()
def mean_pooled_layers(model, tokenizer, sentences: Sequence[str], layers: Sequence[int],
                       max_length: int = 128, batch_size: int = 64, accelerator=None) -> np.ndarray:
    """Average-pooled hidden states of a BERT model, in batches.

    Each sentence is WordPiece-tokenised with ``[CLS]``/``[SEP]`` (truncated to ``max_length``);
    ``hidden_states[l]`` (``l = 0``: embedding output E; ``l = k``: Transformer layer k) is
    averaged over the tokens where ``attention_mask`` is 1, so padding never changes a vector.
    Sentences are batched by length (shortest first) and returned in input order.

    Args:
        model: a transformers BERT model (``AutoModel`` or ``...ForSequenceClassification``),
            on its device already.
        layers: hidden-state indices in ``0..num_hidden_layers``.
        accelerator: if given, the forward passes run under ``accelerator.autocast()``
            (bf16/fp16 per ``mixed_precision`` on a GPU); the pooling is done in float32.

    Returns:
        float32 array ``(len(layers), N, H)``.
    """
    model.eval()
    device = next(model.parameters()).device
    autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext
    order = np.argsort([len(s) for s in sentences], kind="stable")
    out: Optional[np.ndarray] = None
    for start in range(0, len(sentences), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([sentences[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)
        with autocast():
            hidden = model(**enc, output_hidden_states=True).hidden_states
        mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        denom = mask.sum(1).clamp(min=1.0)
        pooled = torch.stack([(hidden[l].float() * mask).sum(1) / denom for l in layers])  # (L, B, H)
        if out is None:
            out = np.zeros((len(layers), len(sentences), pooled.shape[-1]), dtype=np.float32)
        out[:, idx] = pooled.float().cpu().numpy()
    assert out is not None
    return out


@torch.inference_mode()
def bilstm_final_states(model, tokenizer, sentences: Sequence[str], max_length: int = 128,
                        batch_size: int = 64) -> np.ndarray:
    """The BiLSTM student's sentence vectors (concatenated final forward/backward states,
    :meth:`kdnb.models.bilstm.BiLSTMStudent.encode`), in batches: float32 ``(N, 2H)``.

    On a CPU this runs on one thread: the LSTM's small sequential products gain nothing from
    more, and lose much on a busy machine."""
    from ...models.bilstm import WordPieceCollate

    model.eval()
    device = next(model.parameters()).device
    collate = WordPieceCollate(tokenizer, max_length)
    chunks = []
    with _one_cpu_thread(device):
        for start in range(0, len(sentences), batch_size):
            batch = collate([{"sentence": s} for s in sentences[start:start + batch_size]])
            chunks.append(model.encode(batch["input_ids"].to(device), batch["lengths"]).float().cpu().numpy())
    return np.concatenate(chunks).astype(np.float32)


def _load_once(load: Callable[[], tuple], mixed_precision: str = "no") -> Callable[[], tuple]:
    """Wrap ``load() -> (model, tokenizer)`` so that, on first use only, the model is loaded
    and moved to the device of an accelerate ``Accelerator`` (this process' GPU under
    ``accelerate launch``, else the GPU or the CPU). Returns ``() -> (model, tokenizer,
    accelerator)``."""

    @functools.cache
    def loaded() -> tuple:
        from ...training.fit import make_accelerator

        accelerator = make_accelerator(mixed_precision)
        model, tok = load()
        return model.to(accelerator.device), tok, accelerator

    return loaded


def bert_encoder(name: str, family: str, state: str, key: str, load: Callable[[], tuple], layers: Sequence[int],
                 max_length: int, batch_size: int, mixed_precision: str = "no",
                 n_layers: Optional[int] = None) -> Encoder:
    """An :class:`Encoder` for a BERT model that ``load()`` returns as ``(model, tokenizer)``
    (called once, on first use), probing the hidden-state indices ``layers`` (0 = E); forward
    passes in ``mixed_precision`` (``no`` | ``bf16`` | ``fp16``; GPU only) through accelerate.
    The model is a transformers BERT or a :class:`kdnb.models.bert_student.BertStudent` (both take
    ``input_ids, attention_mask, token_type_ids, output_hidden_states``); ``n_layers``: its depth."""
    loaded = _load_once(load, mixed_precision)

    def embed(sentences: list[str], wanted: list[str]) -> dict[str, np.ndarray]:
        model, tok, accelerator = loaded()
        arr = mean_pooled_layers(model, tok, sentences, [layer_index(l) for l in wanted], max_length, batch_size,
                                 accelerator=accelerator)
        return dict(zip(wanted, arr))

    return Encoder(name, family, state, [layer_label(i) for i in layers], key, embed, n_layers)


def bilstm_encoder(name: str, family: str, state: str, key: str, load: Callable[[], tuple], max_length: int,
                   batch_size: int) -> Encoder:
    """An :class:`Encoder` for a BiLSTM student that ``load()`` returns as ``(model, tokenizer)``;
    its one layer is ``final`` (the concatenated final states). The model is placed on the
    device by accelerate and runs in float32 (a small LSTM gains little from bf16)."""
    loaded = _load_once(load)

    def embed(sentences: list[str], wanted: list[str]) -> dict[str, np.ndarray]:
        model, tok, _ = loaded()
        vecs = bilstm_final_states(model, tok, sentences, max_length, batch_size)
        return {w: vecs for w in wanted}

    return Encoder(name, family, state, ["final"], key, embed, 1)


def _teacher_layers(cfg: Config, n_layers: int, who: str) -> list[int]:
    wanted = list(cfg.probing.teacher_layers) or spread_layers(n_layers)
    bad = [l for l in wanted if l > n_layers]
    if bad:
        raise ConfigError(
            f"key 'probing.teacher_layers': {who} has {n_layers} layers (0 = E), cannot probe layer(s) {bad}; "
            "leave the list empty for the thesis' spread E, 1, L/4, L/2, 3L/4, L."
        )
    return sorted(set(wanted))


@contextlib.contextmanager
def _seeded(seed: int):
    """Run the block after ``set_seed(seed)`` (Python, NumPy, torch CPU RNGs), then give the
    caller its RNG states back — so building a student "as initialised" is reproducible and
    leaves the caller's random streams untouched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            set_seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def default_encoders(cfg: Config) -> dict[str, Encoder]:
    """The models to probe, by row name: the fine-tuned ``teacher``; the ``teacher
    (pre-trained)`` before fine-tuning (``probing.pretrained_teacher``); each trained student —
    ``bilstm`` (``bilstm.enabled``) and ``bert_student`` (``bert_student.enabled``; every layer
    ``E, 1, …, L``, as Sučík 2020 probes both students) — and, with
    ``probing.initialised_students``, the same student as initialised before distillation:
    ``bilstm (initialised)`` (``set_seed(seed)``, teacher-embedding init, untrained LSTM —
    exactly the start of :func:`kdnb.training.bilstm.distill_bilstm`) and ``bert_student
    (initialised)`` (``set_seed(seed)``, the teacher loaded, :func:`kdnb.models.bert_student.
    build_bert_student` — exactly the start of its training: random layers, or the teacher's
    first ``L`` layers with ``bert_student.init: teacher``).

    No model is loaded here; each :class:`Encoder` loads its model on first use, with the
    caller's RNG states left as they were.

    Raises:
        StageInputError: no fine-tuned teacher (run notebook 03) or an enabled student has
            not been trained (run notebook 04).
        ConfigError: ``probing.teacher_layers`` names a layer the teacher does not have.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from ...models.teacher import load_teacher, resolve_model_path

    pc = cfg.probing
    tres = store.finished(cfg, "teacher", "teacher")
    if tres is None:
        raise StageInputError(f"{store.run_dir(cfg, 'teacher') / 'model'}: no fine-tuned teacher to probe; "
                              "run notebooks/03_teacher first.")
    t_key = tres.record["config_hash"]
    n_layers = AutoConfig.from_pretrained(tres.model_dir).num_hidden_layers
    encoders: dict[str, Encoder] = {}
    encoders["teacher"] = bert_encoder(
        "teacher", "teacher", "fine-tuned", f"teacher:{t_key}", lambda: load_teacher(cfg),
        _teacher_layers(cfg, n_layers, "the teacher"), pc.max_length, pc.batch_size, cfg.mixed_precision, n_layers)
    if pc.pretrained_teacher:
        path = resolve_model_path(cfg.teacher.model_name_or_path)
        n_pre = AutoConfig.from_pretrained(path).num_hidden_layers
        encoders["teacher (pre-trained)"] = bert_encoder(
            "teacher (pre-trained)", "teacher", "pre-trained", f"pretrained:{cfg.teacher.model_name_or_path}",
            lambda: (AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)),
            _teacher_layers(cfg, n_pre, "the pre-trained teacher"), pc.max_length, pc.batch_size, cfg.mixed_precision,
            n_pre)
    if cfg.bilstm.enabled:
        sres = store.finished(cfg, "bilstm", "bilstm")
        if sres is None:
            raise StageInputError(f"{store.run_dir(cfg, 'bilstm') / 'model.pt'}: no trained BiLSTM student to probe; "
                                  "run notebooks/04_students first (or set bilstm.enabled: false).")

        def load_bilstm(trained: bool):
            from ...data import task_spec
            from ...models.bilstm import build_bilstm

            with _seeded(cfg.seed):  # the same sequence as distill_bilstm: seed, load teacher, build
                teacher, tok = load_teacher(cfg)
                # pair tasks: the siamese BiLSTM, whose encode() still embeds one sentence
                model = build_bilstm(cfg.bilstm, teacher.config.num_labels, tok, teacher,
                                     pair=task_spec(cfg.task).pair)
            if trained:
                model.load_state_dict(torch.load(sres.model_dir, map_location="cpu"))
            return model, tok

        encoders["bilstm"] = bilstm_encoder("bilstm", "bilstm", "trained", f"bilstm:{sres.record['config_hash']}",
                                            lambda: load_bilstm(True), pc.max_length, pc.batch_size)
        if pc.initialised_students:
            init_key = f"bilstm-init:{cfg.section_hash('seed', 'bilstm')}-{t_key}"
            encoders["bilstm (initialised)"] = bilstm_encoder(
                "bilstm (initialised)", "bilstm", "initialised", init_key, lambda: load_bilstm(False),
                pc.max_length, pc.batch_size)
    if cfg.bert_student.enabled:
        encoders.update(_bert_student_encoders(cfg, t_key))
    return encoders


def _bert_student_encoders(cfg: Config, t_key: str) -> dict[str, Encoder]:
    """``bert_student`` (trained, ``<out>/students/bert_student/model.pt``) and, with
    ``probing.initialised_students``, ``bert_student (initialised)``; every layer ``E, 1, …, L``.

    Raises:
        StageInputError: the BERT student has not been trained.
    """
    from ...models.bert_student import build_bert_student
    from ...models.teacher import load_teacher
    from ...training.bert_student import load_bert_student

    pc, bc = cfg.probing, cfg.bert_student
    bres = store.finished(cfg, "bert_student", "bert_student")
    if bres is None:
        raise StageInputError(f"{store.run_dir(cfg, 'bert_student') / 'model.pt'}: no trained BERT student to "
                              "probe; run notebooks/04_students first (or set bert_student.enabled: false).")

    def load_bert(trained: bool):
        with _seeded(cfg.seed):  # the same sequence as bert_student._train: seed, load teacher, build
            teacher, tok = load_teacher(cfg)
            if trained:
                model = load_bert_student(cfg, "bert_student", teacher)
            else:
                model = build_bert_student(bc, teacher.config.num_labels, teacher)
        return model.eval(), tok

    n_trained = int(bres.record.get("sizes", {}).get("num_layers", bc.num_layers))
    out = {"bert_student": bert_encoder(
        "bert_student", "bert_student", "trained", f"bert_student:{bres.record['config_hash']}", lambda: load_bert(True),
        list(range(n_trained + 1)), pc.max_length, pc.batch_size, cfg.mixed_precision, n_trained)}
    if pc.initialised_students:
        init_key = f"bert_student-init:{cfg.section_hash('seed', 'bert_student')}-{t_key}"
        out["bert_student (initialised)"] = bert_encoder(
            "bert_student (initialised)", "bert_student", "initialised", init_key, lambda: load_bert(False),
            list(range(bc.num_layers + 1)), pc.max_length, pc.batch_size, cfg.mixed_precision, bc.num_layers)
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def features(cfg: Config, encoder: Encoder, data: ProbingData, force: bool = False
             ) -> dict[str, dict[str, np.ndarray]]:
    """Sentence vectors of ``data`` for every layer of ``encoder``, cached per (model, layer, task).

    Cached as ``<out>/probing/features/<model>/<task>/layer_<L>.npz`` (arrays ``tr``, ``va``,
    ``te``, stored as float16: half the disk — 245 MB per BERT-large layer and task on the full
    files — and immaterial for a probe that standardises its inputs) next to a ``meta.json``
    holding the encoder's key, the data's fingerprint and ``probing.max_length``; a layer is
    recomputed only when it is missing or the meta changed (``force`` recomputes all). Missing
    layers are computed in one batched pass.

    Returns:
        ``layer -> split -> (N_split, D)`` float32 arrays.
    """
    d = cfg.out / "probing" / "features" / _slug(encoder.name) / data.task
    meta = {"encoder": encoder.key, "data": data.fingerprint(), "max_length": cfg.probing.max_length}
    art = store.Artefact("probing_features", d, meta, cfg.out, record=d / "meta.json")
    art.claim(force)
    missing = [l for l in encoder.layers if not (d / f"layer_{l}.npz").is_file()]
    if missing:
        sents = [s for split in SPLITS for s in data.sentences[split]]
        vecs = encoder.embed(sents, missing)
        bounds = np.cumsum([0] + [len(data.sentences[s]) for s in SPLITS])
        for layer in missing:
            arr = np.asarray(vecs[layer], dtype=np.float32)
            if arr.shape[0] != len(sents):
                raise ValueError(f"encoder {encoder.name!r} returned {arr.shape[0]} vectors for {len(sents)} sentences")
            with atomic_path(d / f"layer_{layer}.npz") as tmp, open(tmp, "wb") as f:
                np.savez(f, **{s: arr[bounds[i]:bounds[i + 1]].astype(np.float16) for i, s in enumerate(SPLITS)})
    art.finish()
    out = {}
    for layer in encoder.layers:
        with np.load(d / f"layer_{layer}.npz") as z:
            out[layer] = {s: z[s].astype(np.float32) for s in SPLITS}
    return out
