"""Rule packs: the schema (:mod:`.schema`), loading and lint (:mod:`.loader`), matchers and
conditions, the engine (:mod:`.engine`) and its results (:mod:`.results`), **the** scorecard
(:mod:`.scorecard`), rule tests (:mod:`.testing`), explain and evaluation, and the analyze
stage (:mod:`.stage`)."""
