"""The small BERT student of the thesis and the KD-method zoo that trains it.

* :class:`BertStudent`: Sučík (2020), "Learning small sentence classifiers from BERT using
  teacher-student knowledge distillation" (MInf Project (Part 2) Report, Edinburgh), §4.3 — a
  BERT with ``L`` layers, hidden size ``H``, intermediate size ``I`` and ``A`` heads (thesis:
  5, 204, 750, 3; 2.42M non-embedding parameters) built from a transformers ``BertConfig``.
  Its input embeddings are the teacher's WordPiece matrix ``V × E`` followed by a linear map
  ``E → H`` (:class:`ProjectedEmbedding`); BERT's position and token-type embeddings and its
  embedding LayerNorm still apply. Sentence pairs are encoded as ``[CLS] a [SEP] b [SEP]``
  with token types, as for the teacher.
* :func:`init_from_teacher`: the PKD / Pea-KD initialisation from the teacher's first ``k``
  layers (Sun et al. 2019, §3; Cho & Kang 2020), where the widths match.
* :func:`distill_bert_student`: trains a student through :func:`kdnb.training.fit.fit` with one of
  the KD methods of :mod:`kdnb.training.losses` (``method``; see :data:`METHODS`), including the
  teacher-assistant chain teacher → TA → student (Mirzadeh et al. 2020).
* :func:`kd_ablation`: one student per method of ``kd_ablation.methods`` and one table.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from ..config import BertStudentConfig
from ..errors import ConfigError


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class ProjectedEmbedding(nn.Module):
    """WordPiece embeddings taken from the teacher, projected linearly to the student's width.

    Sučík (2020), §4.3: the student reuses the teacher's embedding matrix ``W ∈ R^{V×E}`` and
    learns ``P ∈ R^{E×H}`` (with bias): ``e(token) = W[token] · P + b``.

    Args:
        weights: ``(V, E)`` float tensor (copied).
        hidden_size: ``H``.
        trainable: whether ``W`` is trained (``non-static``) or frozen (``static``).
        padding_idx: id of the padding token.
    """

    def __init__(self, weights: torch.Tensor, hidden_size: int, trainable: bool = True, padding_idx: int = 0):
        super().__init__()
        vocab, dim = weights.shape
        self.word = nn.Embedding(vocab, dim, padding_idx=padding_idx)
        self.word.weight.data.copy_(weights)
        self.word.weight.requires_grad_(trainable)
        self.projection = nn.Linear(dim, hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` token ids → ``(B, T, H)`` input embeddings."""
        return self.projection(self.word(input_ids))


class BertStudent(nn.Module):
    """A transformers ``BertForSequenceClassification`` fed with :class:`ProjectedEmbedding`.

    The BERT's own word-embedding table is replaced by the projected teacher embeddings
    (``set_input_embeddings``), so the model holds one ``V × E`` matrix; the student computes
    ``inputs_embeds`` with it and passes them to BERT, whose embedding layer adds position and
    token-type embeddings and applies LayerNorm and dropout.

    Args:
        embedding_weights: the teacher's WordPiece matrix ``(V, E)``.
        num_labels: classes ``C``.
        num_layers, hidden_size, intermediate_size, num_heads: ``L``, ``H``, ``I``, ``A``.
        dropout: hidden and attention-probability dropout.
        trainable_embeddings: train ``W`` (``non-static``) or freeze it (``static``).
        max_position_embeddings, type_vocab_size: as the teacher's (512, 2 for BERT).
        padding_idx: padding token id.
        attn_implementation: ``sdpa`` (fast) or ``eager`` (needed to return attentions).

    Raises:
        ValueError: ``hidden_size`` is not a multiple of ``num_heads``.
    """

    def __init__(
        self,
        embedding_weights: torch.Tensor,
        num_labels: int,
        num_layers: int = 5,
        hidden_size: int = 204,
        intermediate_size: int = 750,
        num_heads: int = 3,
        dropout: float = 0.1,
        trainable_embeddings: bool = True,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        padding_idx: int = 0,
        attn_implementation: str = "sdpa",
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        config = BertConfig(
            vocab_size=1, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
            intermediate_size=intermediate_size, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
            max_position_embeddings=max_position_embeddings, type_vocab_size=type_vocab_size, num_labels=num_labels,
            pad_token_id=0,
        )
        config._attn_implementation = attn_implementation
        self.bert = BertForSequenceClassification(config)
        self.bert.set_input_embeddings(ProjectedEmbedding(embedding_weights, hidden_size, trainable_embeddings,
                                                          padding_idx))

    @property
    def config(self) -> BertConfig:
        return self.bert.config

    @property
    def embeddings(self) -> ProjectedEmbedding:
        return self.bert.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, output_hidden_states: bool = False,
                output_attentions: bool = False):
        """Logits (and, on request, hidden states and attentions) for a batch.

        Args:
            input_ids, attention_mask, token_type_ids: ``(B, T)``.

        Returns:
            transformers' ``SequenceClassifierOutput``: ``logits`` ``(B, C)``; ``hidden_states``
            ``L + 1`` tensors ``(B, T, H)`` (embeddings first); ``attentions`` ``L`` tensors
            ``(B, A, T, T)`` (only with ``attn_implementation='eager'``).
        """
        return self.bert(inputs_embeds=self.embeddings(input_ids), attention_mask=attention_mask,
                         token_type_ids=token_type_ids, output_hidden_states=output_hidden_states,
                         output_attentions=output_attentions)

    def non_embedding_parameters(self) -> int:
        """Parameters outside the embedding layer (word, projection, position, token type,
        LayerNorm): encoder, pooler and classifier — the count the thesis reports (2.42M)."""
        emb = {id(p) for p in self.bert.bert.embeddings.parameters()} | {id(p) for p in self.embeddings.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in emb)


def init_from_teacher(student: BertStudent, teacher) -> BertStudent:
    """Initialise ``student`` from the teacher's embeddings, first ``L`` layers and pooler.

    The PKD setting (Sun et al. 2019, §4.1: the student is initialised with the first ``k``
    layers of the teacher's BERT) also used by Pea-KD (Cho & Kang 2020). The WordPiece matrix
    is the teacher's already; the projection ``E → H`` is set to the identity, so the student's
    hidden states start equal to the teacher's first ``L`` layers. The classifier stays random.

    Args:
        student: a :class:`BertStudent` with the teacher's ``H``, ``I``, ``A`` and ``L ≤`` the
            teacher's layers.
        teacher: a transformers BERT classifier (``.bert`` with ``embeddings``, ``encoder``,
            ``pooler``).

    Returns:
        ``student`` (modified in place).

    Raises:
        ConfigError: the sizes differ (naming ``bert_student.init``).
    """
    tc, sc = teacher.config, student.config
    want = {"hidden_size": tc.hidden_size, "intermediate_size": tc.intermediate_size,
            "num_attention_heads": tc.num_attention_heads}
    have = {k: getattr(sc, k) for k in want}
    emb_dim = student.embeddings.word.weight.shape[1]
    if have != want or sc.num_hidden_layers > tc.num_hidden_layers or emb_dim != tc.hidden_size:
        raise ConfigError(
            f"key 'bert_student.init': 'teacher' needs the teacher's sizes (hidden {tc.hidden_size}, intermediate "
            f"{tc.intermediate_size}, heads {tc.num_attention_heads}, at most {tc.num_hidden_layers} layers), got "
            f"hidden {sc.hidden_size}, intermediate {sc.intermediate_size}, heads {sc.num_attention_heads}, "
            f"{sc.num_hidden_layers} layers; use init: random for other sizes.")
    t, s = teacher.bert, student.bert.bert
    with torch.no_grad():
        for name in ("position_embeddings", "token_type_embeddings", "LayerNorm"):
            getattr(s.embeddings, name).load_state_dict(getattr(t.embeddings, name).state_dict())
        student.embeddings.word.weight.copy_(t.embeddings.word_embeddings.weight)
        student.embeddings.projection.weight.copy_(torch.eye(tc.hidden_size))
        student.embeddings.projection.bias.zero_()
        for k in range(sc.num_hidden_layers):
            s.encoder.layer[k].load_state_dict(t.encoder.layer[k].state_dict())
        if t.pooler is not None and s.pooler is not None:
            s.pooler.load_state_dict(t.pooler.state_dict())
    return student


def build_bert_student(bc: BertStudentConfig, num_labels: int, teacher, attn_implementation: str = "sdpa"
                       ) -> BertStudent:
    """A :class:`BertStudent` with the sizes of ``bc``, the teacher's WordPiece matrix and, with
    ``bc.init == 'teacher'``, :func:`init_from_teacher`.

    Raises:
        ConfigError: ``init: teacher`` with sizes other than the teacher's.
    """
    tc = teacher.config
    model = BertStudent(
        teacher.get_input_embeddings().weight.detach().clone(), num_labels, bc.num_layers, bc.hidden_size,
        bc.intermediate_size, bc.num_heads, bc.dropout, bc.embedding_mode != "static",
        getattr(tc, "max_position_embeddings", 512), getattr(tc, "type_vocab_size", 2),
        tc.pad_token_id or 0, attn_implementation)
    if bc.init == "teacher":
        init_from_teacher(model, teacher)
    return model


class DistillationModel(nn.Module):
    """The student plus what the intermediate losses train with it: where the student's width
    ``H_s`` differs from the teacher's ``H_t``, one learned linear map ``H_s → H_t`` per matched
    layer for the [CLS] states (PKD, Aguilar et al.). The papers' students have the teacher's
    width and compare the states directly; with ``H_s == H_t`` no map is made here either.

    Args:
        student: the :class:`BertStudent`.
        cls_layers: student layers (1-based) whose [CLS] state is matched; ``[]``: none.
        teacher_hidden: ``H_t``.
    """

    def __init__(self, student: BertStudent, cls_layers: list[int], teacher_hidden: int):
        super().__init__()
        self.student = student
        self.cls_layers = list(cls_layers)
        hs = student.config.hidden_size
        self.maps = nn.ModuleList(
            [nn.Linear(hs, teacher_hidden) for _ in cls_layers] if hs != teacher_hidden else [])

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, hidden: bool = False,
                attentions: bool = False) -> dict:
        """Returns ``logits`` ``(B, C)``; with ``hidden``, ``cls`` ``(len(cls_layers), B, H_t)``
        (mapped [CLS] states); with ``attentions``, ``attentions`` ``(L, B, A, T, T)``."""
        out = self.student(input_ids, attention_mask, token_type_ids, output_hidden_states=hidden,
                           output_attentions=attentions)
        res = {"logits": out.logits}
        if hidden and self.cls_layers:
            cls = [out.hidden_states[j][:, 0] for j in self.cls_layers]
            if len(self.maps):
                cls = [m(h) for m, h in zip(self.maps, cls)]
            res["cls"] = torch.stack(cls)
        if attentions:
            res["attentions"] = torch.stack(out.attentions)
        return res


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
