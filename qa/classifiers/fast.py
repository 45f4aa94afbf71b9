"""Prediction without scikit-learn's per-call overhead.

``Pipeline.predict_proba`` on one short document spends most of its ~5 ms in input
validation, not arithmetic; with four models per call that alone would break the
100 calls/s budget. ``CompiledModel`` reads the fitted pipeline's vocabularies, idf
weights, SVM coefficients and sigmoid calibrators once, then computes the same
probabilities with a dictionary lookup and a small dot product per document. The stored
pipeline stays the source of truth; tests check both give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import repeat
from typing import Callable, Sequence

import numpy as np
from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC


@dataclass(frozen=True)
class _Block:
    """One TF-IDF vectorizer of the feature union, at ``offset`` in the joined features."""

    name: str
    analyze: Callable[[str], list[str]]
    vocabulary: dict[str, int]
    idf: np.ndarray
    sublinear_tf: bool
    offset: int


@dataclass(frozen=True)
class _Member:
    """One calibrated SVM: weights (n_features, n_outputs) and per-output sigmoid (a, b)."""

    coef_t: np.ndarray  # transposed so the rows of a document's features are one gather
    intercept: np.ndarray
    sigmoid_a: np.ndarray
    sigmoid_b: np.ndarray
    class_index: np.ndarray  # column of each output in ``classes``


class CompiledFeatures:
    """The TF-IDF blocks of a fitted ``FeatureUnion``: ``features(doc)`` gives the indices
    and values ``transform`` would put in the document's row, without building matrices."""

    def __init__(self, features: FeatureUnion):
        blocks = []
        offset = 0
        for name, vec in features.transformer_list:
            if not isinstance(vec, TfidfVectorizer) or vec.norm != "l2" or not vec.use_idf or vec.binary:
                raise ValueError(f"feature block {name!r} must be a TfidfVectorizer with l2 norm and idf")
            # plain ints: numpy.fromiter takes numpy scalars (what a fitted vocabulary holds)
            # ten times slower than Python ints
            vocabulary = {term: int(k) for term, k in vec.vocabulary_.items()}
            blocks.append(_Block(name, vec.build_analyzer(), vocabulary,
                                 np.asarray(vec.idf_, dtype=np.float64), bool(vec.sublinear_tf), offset))
            offset += len(vec.vocabulary_)
        self._blocks = tuple(blocks)
        self.size = offset

    def __call__(self, doc: str) -> tuple[np.ndarray, np.ndarray]:
        """Indices and l2-normalized TF-IDF values of ``doc`` (each block normalized alone)."""
        all_idx: list[int] = []
        all_val: list[float] = []
        for b in self._blocks:
            tokens = b.analyze(doc)
            # map(dict.get, tokens, repeat(-1)) runs in C; unknown tokens become -1.
            found = np.fromiter(map(b.vocabulary.get, tokens, repeat(-1)), dtype=np.int64, count=len(tokens))
            found = found[found >= 0]
            if not found.size:
                continue
            idx, counts = np.unique(found, return_counts=True)
            tf = counts.astype(np.float64)
            if b.sublinear_tf:
                tf = np.log(tf) + 1.0
            val = tf * b.idf[idx]
            norm = math.sqrt(float(val @ val))
            if norm > 0:
                val /= norm
            all_idx.extend((idx + b.offset).tolist())
            all_val.extend(val.tolist())
        return np.asarray(all_idx, dtype=np.int64), np.asarray(all_val, dtype=np.float64)


    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self._blocks)

    def block_span(self, name: str) -> slice:
        """Where a block's columns lie in the joined features."""
        b = self._blocks[self.block_names.index(name)]
        return slice(b.offset, b.offset + len(b.vocabulary))

    def block_batch(self, name: str, docs: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column (inside the block) and value of every non-zero feature of one block
        for ``docs``, rows ascending: one round of numpy calls for all the documents."""
        b = self._blocks[self.block_names.index(name)]
        n = len(docs)
        lengths, tokens = [], []
        for doc in docs:
            t = b.analyze(doc)
            lengths.append(len(t))
            tokens.extend(t)
        ids = np.fromiter(map(b.vocabulary.get, tokens, repeat(-1)), dtype=np.int64, count=len(tokens))
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        keep = ids >= 0
        width = len(b.vocabulary)
        keys, counts = np.unique(rows[keep] * width + ids[keep], return_counts=True)
        row, col = keys // width, keys % width
        tf = counts.astype(np.float64)
        if b.sublinear_tf:
            tf = np.log(tf) + 1.0
        val = tf * b.idf[col]
        norms = np.sqrt(np.bincount(row, weights=val * val, minlength=n))
        val /= np.where(norms > 0, norms, 1.0)[row]
        return row, col, val

    def batch(self, docs: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and value of every non-zero feature of ``docs``, as ``__call__`` gives
        them one document at a time, computed for all documents together (fewer numpy calls
        per document: one call's utterances are scored at once)."""
        rows_out, cols_out, vals_out = [], [], []
        for b in self._blocks:
            row, col, val = self.block_batch(b.name, docs)
            rows_out.append(row)
            cols_out.append(col + b.offset)
            vals_out.append(val)
        return np.concatenate(rows_out), np.concatenate(cols_out), np.concatenate(vals_out)


def sparse_dot(row: np.ndarray, col: np.ndarray, val: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """[n, k] product of the sparse rows (``row`` ascending, as ``block_batch`` gives them)
    with dense ``weights`` [features, k], without building a sparse matrix."""
    out = np.zeros((n, weights.shape[1]))
    if row.size:
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        out[row[starts]] = np.add.reduceat(weights[col] * val[:, None], starts, axis=0)
    return out


class CompiledModel:
    """Same ``predict_proba`` as the fitted pipeline it was compiled from."""

    def __init__(self, pipeline: Pipeline):
        features, calibrated = _check_structure(pipeline)
        self.classes: list[str] = [str(c) for c in calibrated.classes_]
        self._features = CompiledFeatures(features)
        self._members = tuple(_member(c, calibrated.classes_) for c in calibrated.calibrated_classifiers_)

    def predict_proba(self, docs: Sequence[str]) -> np.ndarray:
        n_classes = len(self.classes)
        out = np.zeros((len(docs), n_classes))
        for row, doc in enumerate(docs):
            idx, val = self._features(doc)
            total = np.zeros(n_classes)
            for m in self._members:
                decision = val @ m.coef_t[idx] + m.intercept
                proba = np.zeros(n_classes)
                proba[m.class_index] = 1.0 / (1.0 + np.exp(m.sigmoid_a * decision + m.sigmoid_b))
                if n_classes == 2:
                    proba[0] = 1.0 - proba[1]
                else:
                    s = proba.sum()
                    proba = proba / s if s > 0 else np.full(n_classes, 1.0 / n_classes)
                total += proba
            out[row] = total / len(self._members)
        return out


def _check_structure(pipeline: Pipeline) -> tuple[FeatureUnion, CalibratedClassifierCV]:
    """The shape ``build_pipeline`` makes; anything else cannot be compiled."""
    if not isinstance(pipeline, Pipeline) or [n for n, _ in pipeline.steps] != ["features", "classifier"]:
        raise ValueError("expected a Pipeline with steps 'features' and 'classifier'")
    features, calibrated = pipeline.named_steps["features"], pipeline.named_steps["classifier"]
    if not isinstance(features, FeatureUnion) or features.transformer_weights:
        raise ValueError("step 'features' must be an unweighted FeatureUnion")
    if not isinstance(calibrated, CalibratedClassifierCV) or calibrated.method != "sigmoid":
        raise ValueError("step 'classifier' must be a sigmoid CalibratedClassifierCV")
    for c in calibrated.calibrated_classifiers_:
        if not isinstance(c.estimator, LinearSVC) or not all(isinstance(k, _SigmoidCalibration) for k in c.calibrators):
            raise ValueError("calibrated estimators must be LinearSVC with sigmoid calibrators")
    return features, calibrated


def _member(calibrated_classifier, classes: np.ndarray) -> _Member:
    svc = calibrated_classifier.estimator
    class_pos = {c: i for i, c in enumerate(classes)}
    if len(classes) == 2:
        # A binary SVM has one decision column: the score of classes[1].
        class_index = np.array([1])
    else:
        class_index = np.array([class_pos[c] for c in svc.classes_])
    return _Member(
        coef_t=np.ascontiguousarray(np.asarray(svc.coef_, dtype=np.float64).T),
        intercept=np.asarray(svc.intercept_, dtype=np.float64),
        sigmoid_a=np.array([k.a_ for k in calibrated_classifier.calibrators], dtype=np.float64),
        sigmoid_b=np.array([k.b_ for k in calibrated_classifier.calibrators], dtype=np.float64),
        class_index=class_index,
    )
