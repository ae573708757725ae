"""Training: the one accelerate loop (:mod:`.fit`), the KD losses (:mod:`.losses`), and a stage
per model — fine-tuning the teacher and labelling the transfer set (:mod:`.teacher`), distilling
the BiLSTM (:mod:`.bilstm`), the BERT student (:mod:`.bert_student`) and Pea-KD's students
(:mod:`.peakd`); :mod:`.runs` holds a student's result record and its runs over seeds."""
