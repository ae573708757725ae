"""The models of the study: the teacher, the students (BiLSTM, small BERT, Pea-KD's truncated
BERTs with SPS), word2vec embeddings, and what they share (the one BERT input adapter, the PKD
layer map, the parameter counter). Training lives in :mod:`kdnb.training`."""
