"""Analysis of the trained models: their predictions (:mod:`.predictions`), learning checks
(:mod:`.learning`), speed and size (:mod:`.bench`), the SentEval probing tasks
(:mod:`.probing`) and the explore profile's hyperparameter searches (:mod:`.explore`)."""
