"""The scikit-learn pipeline every model uses: jieba-word and character n-gram TF-IDF
features (plus utterance cues for the role model), a linear SVM, and sigmoid calibration for
probabilities."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

from .specs import ModelSpec, TrainOptions
from .text import char_ngrams, utterance_cues, word_ngrams


def build_pipeline(options: TrainOptions, spec: ModelSpec, calibration_cv: Iterable | None = None) -> Pipeline:
    """``calibration_cv``: (train, test) index pairs for the calibration folds, when they
    must follow groups; default ``options.calibration_folds`` stratified folds."""
    word_tfidf = TfidfVectorizer(analyzer=word_ngrams, sublinear_tf=True,
                                 max_features=options.max_word_features, dtype=np.float32)
    # Character n-grams survive jieba's mis-cuts and ASR homophone errors inside words.
    char_tfidf = TfidfVectorizer(analyzer=char_ngrams, sublinear_tf=True, min_df=2,
                                 max_features=options.max_char_features, dtype=np.float32)
    blocks = [("words", word_tfidf), ("chars", char_tfidf)]
    if spec.cue_features:
        blocks.append(("cues", TfidfVectorizer(analyzer=utterance_cues, sublinear_tf=True, dtype=np.float32)))
    # ensemble=False: one SVM fitted on all data plus calibrators fitted on out-of-fold
    # decisions, so prediction runs one linear model instead of one per calibration fold.
    classifier = CalibratedClassifierCV(
        LinearSVC(C=options.svm_c, random_state=options.random_state),
        method="sigmoid", cv=options.calibration_folds if calibration_cv is None else list(calibration_cv),
        ensemble=False,
    )
    return Pipeline([("features", FeatureUnion(blocks)), ("classifier", classifier)])


def strip_for_storage(pipeline: Pipeline) -> None:
    """Make the fitted pipeline small and quick to load. ``stop_words_`` holds every term
    cut by ``max_features`` and prediction never reads it. The vocabulary maps terms to
    numpy integers, which skops stores as one .npy file each; plain ints are one JSON value.
    Calibration folds given as index pairs only matter while fitting: their count is kept."""
    calibrated = pipeline.named_steps["classifier"]
    if not isinstance(calibrated.cv, int):
        calibrated.cv = len(calibrated.cv)
    for _, vectorizer in pipeline.named_steps["features"].transformer_list:
        if hasattr(vectorizer, "stop_words_"):
            del vectorizer.stop_words_
        vectorizer.vocabulary_ = {term: int(i) for term, i in vectorizer.vocabulary_.items()}


def describe(pipeline: Pipeline) -> dict[str, Any]:
    """The fitted pipeline's named steps, for the model card."""
    features = pipeline.named_steps["features"]
    calibrated = pipeline.named_steps["classifier"]
    return {
        "steps": [name for name, _ in pipeline.steps],
        "features": {
            name: {"type": type(vec).__name__, "analyzer": getattr(vec.analyzer, "__name__", str(vec.analyzer)),
                   "vocabulary": len(vec.vocabulary_), "sublinear_tf": vec.sublinear_tf}
            for name, vec in features.transformer_list
        },
        "classifier": {"type": type(calibrated).__name__, "method": calibrated.method,
                       "estimator": type(calibrated.estimator).__name__, "cv": calibrated.cv,
                       "ensemble": calibrated.ensemble},
    }
