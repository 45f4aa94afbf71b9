"""Text classifiers (complaint risk, dissatisfaction, agent conduct, topic, speaker role).

The public entry point is :mod:`qa.classify`; this package holds its parts: tokenization,
pipeline construction, the seed corpus, model cards, safe persistence, training and
examples harvested from inspectors' review decisions, and the learned speaker-role assigner
of mono recordings."""
