"""SentEval probing (Conneau et al. 2018) of the teacher and the students, layer by layer.

Conneau, Kruszewski, Lample, Barrault & Baroni (2018), "What you can cram into a single $&!#*
vector: Probing sentence embeddings for linguistic properties", ACL 2018, introduced 10 probing
tasks; Sučík (2020) probes the BERT teacher and the students with them. This module:

1. reads the SentEval probing files (``split<TAB>label<TAB>sentence``, splits ``tr``/``va``/``te``;
   :func:`read_probing_file`) from ``<data_dir>/senteval_probing/`` (or ``probing.data_dir``).
   ``../shared/data`` ships a small sample (≈120 tr / 60 va / 60 te sentences per task); the full
   files (100k / 10k / 10k per task, from
   https://github.com/facebookresearch/SentEval/tree/main/data/probing) work unchanged when put
   in that folder;
2. turns every sentence into one vector per model and layer (:class:`Encoder`): for BERT models
   the average over the (non-padding) tokens of the embedding layer ``E`` and of each chosen
   Transformer layer (:func:`spread_layers`: the thesis' E, 1, 6, 12, 18, 24 for BERT-large and
   the same spread for other depths); for the BERT student (Sučík 2020, §4.3) the same average
   over its embedding output and every one of its layers ``E, 1, …, L``; for the BiLSTM student
   its concatenated final states.
   Vectors are computed in batches and cached per (model, layer, task) under
   ``<out>/probing/features/``;
3. trains the probe of the thesis (and of Conneau et al. 2018): an MLP with one sigmoid hidden
   layer (:class:`MLPProbe`), Adam (lr 1e-3), batch 64, early stopping on ``va``, a grid over
   dropout {0, 0.1, 0.2} × width {50, 100, 200} chosen by ``va`` accuracy; only the chosen
   probe is scored on ``te`` (:func:`probe_layer`);
4. puts the scores beside baselines: the majority class of this data, and the published
   majority, human and best-encoder numbers of Conneau et al. (2018, Table 2;
   :data:`CONNEAU_2018`), and draws the thesis figures (:func:`plot_teacher_layers`,
   :func:`plot_students_vs_teacher`, :func:`plot_students_init_vs_trained`, and
   :func:`plot_layers_by_depth`: every layer of the teacher and of both students by relative
   depth, trained and initialised).

Which models are probed (:func:`default_encoders`): the fine-tuned teacher (and the
pre-trained one), and *both* students of the thesis — the BiLSTM and, when
``bert_student.enabled``, the BERT student — each trained and, with
``probing.initialised_students``, as initialised before distillation; the thesis' question is
how the student architecture changes what linguistic knowledge is distilled and where it is stored.

The notebook ``notebooks/05_probing`` calls :func:`run_probing` and the plotting functions.

Modules: :mod:`.data` (reading the SentEval files), :mod:`.encoders` (models → features per
layer, cached), :mod:`.probe` (the MLP probe and the probing run), :mod:`.plots`.
"""

from .data import (
    CONNEAU_2018,
    CONNEAU_2018_LABELS,
    FULL_TRAIN_SIZE,
    PROBING_FOLDER,
    PROBING_TASKS,
    SENTEVAL_URL,
    SPLITS,
    ProbingData,
    ProbingTask,
    data_sizes,
    limit_splits,
    load_probing_tasks,
    majority_baseline,
    probing_data_dir,
    read_probing_file,
    sample_warning,
)
from .encoders import (
    EmbedFn,
    Encoder,
    bert_encoder,
    bilstm_encoder,
    bilstm_final_states,
    default_encoders,
    features,
    layer_index,
    layer_label,
    mean_pooled_layers,
    spread_layers,
)
from .plots import (
    plot_layers_by_depth,
    plot_students_init_vs_trained,
    plot_students_vs_teacher,
    plot_teacher_layers,
)
from .probe import (
    LayerScore,
    MLPProbe,
    ProbeEnsemble,
    ProbingRun,
    Selection,
    TrainedProbe,
    best_layers,
    pivot_scores,
    probe_layer,
    run_probing,
    scores_table,
    select_probe,
    train_probes,
)

__all__ = ["CONNEAU_2018", "CONNEAU_2018_LABELS", "FULL_TRAIN_SIZE", "PROBING_FOLDER", "PROBING_TASKS",
           "SENTEVAL_URL", "SPLITS", "data_sizes", "limit_splits", "load_probing_tasks", "majority_baseline",
           "probing_data_dir", "ProbingData", "ProbingTask", "read_probing_file", "sample_warning", "bert_encoder",
           "bilstm_encoder", "bilstm_final_states", "default_encoders", "EmbedFn", "Encoder", "features",
           "layer_index", "layer_label", "mean_pooled_layers", "spread_layers", "best_layers", "LayerScore",
           "MLPProbe", "pivot_scores", "probe_layer", "ProbeEnsemble", "ProbingRun", "run_probing", "scores_table",
           "select_probe", "Selection", "train_probes", "TrainedProbe", "plot_layers_by_depth",
           "plot_students_init_vs_trained", "plot_students_vs_teacher", "plot_teacher_layers"]
