"""Augmentation and the transfer set: rule-based (Tang et al. 2019) and GPT-2 generation.

Distilling into a small student needs far more sentences than a GLUE training set holds: the
student learns the teacher's function only where it sees the teacher's outputs. Tang et al.
(2019, "Distilling task-specific knowledge from BERT into simple neural networks", §3.3)
augment the training set with rules; Sučík (2020, §3) samples sentences from a GPT-2 language
model fine-tuned on the training sentences. The *transfer set* is the training set plus such
sentences, every one labelled with the teacher's logits.

* :mod:`kdnb.augment.rules` — :func:`augment_rules` → ``<out>/augmented/rules/``;
* :mod:`kdnb.augment.gpt2` — :func:`augment_gpt2` → ``<out>/augmented/gpt2_model/`` and
  ``<out>/augmented/gpt2/``;
* :mod:`kdnb.augment.transfer` — :func:`transfer_input` assembles the unlabelled transfer set
  ``none | rules | gpt2 | rules+gpt2``, :func:`label_transfer_sets` labels it (notebook 03);
* :mod:`kdnb.augment.shards` — where the sets live; the shard-by-shard, resumable writing.

The ablations that train students on these sets live in :mod:`kdnb.experiments`.
"""

from .gpt2 import EOS, augment_gpt2, load_gpt2, sample_sentences, train_gpt2
from .rules import augment_rules, load_spacy
from .shards import (
                     METHODS,
                     TRANSFER_SETS,
                     AugmentResult,
                     augmented_dir,
                     load_augmented,
                     methods_needed,
                     source_counts,
                     training_sentences,
                     transfer_dir,
                     transfer_sets_needed,
)
from .transfer import (
                     augment,
                     confidence_summary,
                     counts_table,
                     examples,
                     label_transfer_sets,
                     length_summary,
                     lengths_frame,
                     load_transfer_set,
                     logits_array,
                     plot_confidence,
                     plot_lengths,
                     teacher_confidence,
                     transfer_input,
)

__all__ = ["EOS", "METHODS", "TRANSFER_SETS", "AugmentResult", "augment", "augment_gpt2", "augment_rules",
           "augmented_dir", "confidence_summary", "counts_table", "examples", "label_transfer_sets",
           "length_summary", "lengths_frame", "load_augmented", "load_gpt2", "load_spacy", "load_transfer_set",
           "logits_array", "methods_needed", "plot_confidence", "plot_lengths", "sample_sentences", "source_counts",
           "teacher_confidence", "train_gpt2", "training_sentences", "transfer_dir", "transfer_input",
           "transfer_sets_needed"]
