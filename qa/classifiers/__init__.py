"""Text classifiers (complaint risk, dissatisfaction, agent conduct, topic, speaker role):
predictions of the loaded set (:mod:`.predict`), training and evaluation (:mod:`.training`),
tokenization and features, pipeline construction, the seed corpus, model cards, safe
persistence (:mod:`.persist`) and the learned speaker-role assigner of mono recordings
(:mod:`.roles`)."""
