"""Learned detectors: one calibrated linear model per text category, on single utterances.

Keyword and sound lists catch the phrasings someone wrote down; a threat or an insult in
ordinary words slips past them. A detector scores every utterance of a call for each
category it knows (word, character and syllable n-grams, the last equal for homophones), and
a rule uses it as one operator of its condition (``detector: {min_prob: 0.6}``), so every
finding still names its rule, and says which operator fired with what probability.

Training reads the evaluation corpus' *train* split (``data/eval/train/snippets.jsonl``) and
the training-only snippets (``data/eval/extra/train_*.jsonl``, written for this, never scored):
the utterances of the category's role in a positive snippet are positives, every other
utterance of the split a negative for that category. A positive snippet often has more than
one line of that role (a greeting, then the insult), so a first fit picks, in each positive
snippet, the lines that carry the act (scoring at least half the snippet's best) and the
final fit learns from those. Each line is also learnt in copies with recognition noise
(homophones, dropped characters). Thresholds are chosen for a precision target at snippet
level on the *dev* split pooled with the training snippets scored out of fold (five fits, each
without one fold of snippets); the *test* split is only reported.

The artifact is ``<pack>/models/detectors.skops`` with its card, loaded through the same
sha256 and trusted-type checks as every classifier.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ClassifierError
from .cards import ModelCard
from .text import FEATURES_VERSION

log = logging.getLogger(__name__)

DETECTOR_MODEL = "detectors"
# the categories that are something said; silence, rate, overlap, missing statements and
# contact times are measured, not learnt
CATEGORIES: tuple[str, ...] = (
    "promise.guaranteed_return", "promise.misleading_return", "misrep.deposit_equivalence",
    "misrep.superlative", "loan.approval_promise", "fraud.upfront_fee", "pii.credential_request",
    "conduct.threat", "conduct.insult", "conduct.impersonation", "service.impatience",
    "complaint.discouraged", "complaint.escalation_threat", "customer.vulnerable", "customer.do_not_call",
)


@dataclass(frozen=True)
class DetectorOptions:
    random_state: int = 20261202
    svm_c: float = 0.5
    noise_copies: int = 2  # noisy copies of each training line
    noise_rate: float = 0.10  # share of characters replaced by a homophone in a copy
    drop_rate: float = 0.03  # share of characters dropped in a copy
    carry_share: float = 0.5  # a positive snippet's line is a positive if it scores this share of its best
    precision_target: float = 0.9  # thresholds: the lowest with this snippet-level precision
    # thresholds are chosen on dev pooled with the training snippets scored out of fold: dev
    # alone has ten positives a category, where one hard negative decides the threshold
    threshold_folds: int = 5
    # the snippets are half positives, a call is mostly ordinary lines: below this floor a
    # detector fires on too many of them (chosen on the train and dev dialogues, which the
    # detectors never train on: from 0.35 to 0.40 dev's false findings fell 3 -> 1, with the
    # same recall on both)
    min_threshold: float = 0.40
    max_char_features: int = 12000
    max_word_features: int = 0  # 0: no word block (BENCHMARKS: same dev figures, 2x faster)
    max_sound_features: int = 12000
    max_context_features: int = 4000  # syllable n-grams of the utterance before; 0: none

    def validate(self) -> None:
        if self.svm_c <= 0:
            raise ValueError(f"svm_c must be positive, got {self.svm_c}")
        if self.noise_copies < 0:
            raise ValueError(f"noise_copies must not be negative, got {self.noise_copies}")
        if self.threshold_folds < 2:
            raise ValueError(f"threshold_folds must be at least 2, got {self.threshold_folds}")
        if self.max_word_features < 0 or self.max_context_features < 0:
            raise ValueError("max_word_features and max_context_features must not be negative")
        for name in ("noise_rate", "drop_rate", "carry_share", "precision_target", "min_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Line:
    """One utterance of a corpus snippet."""

    snippet: str
    category: str  # the snippet's category
    positive: bool  # the snippet is a positive of its category
    role: str
    text: str


def line_text(text: str) -> str:
    """An utterance as the detector reads it: the transcript's text, spaces collapsed (the
    form the call-level classifiers read too, so the word cuts are shared)."""
    return " ".join(text.split())


def detector_inputs(texts: Sequence[str]) -> list[str]:
    """One call's (or snippet's) utterances as the detector reads them: each one's
    :func:`line_text` with the utterance before it as context (``text.with_context``)."""
    from .text import with_context

    lines = [line_text(t) for t in texts]
    return [with_context(t, lines[i - 1] if i else "") for i, t in enumerate(lines)]


def corpus_lines(items) -> list[Line]:
    """The utterances of corpus snippets (:func:`qa.rules.corpus.read_snippets` items), each
    ``text`` the detector's input (:func:`detector_inputs`)."""
    out = []
    for item in items:
        category = next(iter(item.sample.expected or item.sample.must_not_fire))
        utts = [u for u in item.sample.reference.utterances if line_text(u.text)]
        for u, doc in zip(utts, detector_inputs([u.text for u in utts])):
            out.append(Line(item.sample.call_id, category, item.positive, u.role, doc))
    return out


def _category_roles() -> dict[str, str]:
    from ..rules.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    return {c: taxonomy[c].role for c in CATEGORIES}


def _targets(lines: Sequence[Line], roles: dict[str, str]) -> np.ndarray:
    """[line, category] 1 where the line is its positive snippet's line of the category's role."""
    y = np.zeros((len(lines), len(CATEGORIES)), dtype=np.int8)
    col = {c: k for k, c in enumerate(CATEGORIES)}
    for i, line in enumerate(lines):
        k = col.get(line.category)
        if k is not None and line.positive and roles[line.category] in (line.role, "any"):
            y[i, k] = 1
    return y


def build_detector_pipeline(options: DetectorOptions):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.svm import LinearSVC

    from .text import context_sound_ngrams, own_char_ngrams, own_sound_ngrams, word_ngrams

    def tfidf(analyzer, limit):
        return TfidfVectorizer(analyzer=analyzer, sublinear_tf=True, max_features=limit, dtype=np.float32)

    blocks = [("chars", tfidf(own_char_ngrams, options.max_char_features)),
              ("sounds", tfidf(own_sound_ngrams, options.max_sound_features))]
    if options.max_context_features:  # the utterance before: who asked, what was complained of
        blocks.append(("context", tfidf(context_sound_ngrams, options.max_context_features)))
    if options.max_word_features:  # jieba words: the costliest block to compute per call
        blocks.insert(0, ("words", tfidf(word_ngrams, options.max_word_features)))
    features = FeatureUnion(blocks)
    classifier = OneVsRestClassifier(CalibratedClassifierCV(
        LinearSVC(C=options.svm_c, class_weight="balanced", random_state=options.random_state),
        method="sigmoid", cv=3, ensemble=False))
    return Pipeline([("features", features), ("classifier", classifier)])


def _augmented(texts: Sequence[str], y: np.ndarray, options: DetectorOptions) -> tuple[list[str], np.ndarray]:
    from ..rules.evaluate import homophone_noise

    rng = random.Random(options.random_state)
    from .text import CONTEXT_MARK

    def noisy(doc: str) -> str:  # each part apart, so the mark between them survives
        return CONTEXT_MARK.join(homophone_noise(part, options.noise_rate, rng, options.drop_rate) or part
                                 for part in doc.split(CONTEXT_MARK))

    out, rows = list(texts), [y]
    for _ in range(options.noise_copies):
        out.extend(noisy(t) for t in texts)
        rows.append(y)
    return out, np.vstack(rows)


def _refine(lines: Sequence[Line], y: np.ndarray, scores: np.ndarray, share: float) -> np.ndarray:
    """Keep, in each positive snippet, only the lines that score ``share`` of its best line."""
    y = y.copy()
    by_snippet: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        by_snippet.setdefault(line.snippet, []).append(i)
    for k in range(len(CATEGORIES)):
        for rows in by_snippet.values():
            pos = [i for i in rows if y[i, k]]
            if len(pos) > 1:
                best = max(scores[i, k] for i in pos)
                for i in pos:
                    y[i, k] = int(scores[i, k] >= share * best)
    return y


@dataclass(frozen=True)
class SnippetScores:
    """Per category: the best score over the snippet's lines of the category's role, whether
    the snippet is a positive of that category, and whether that is known: a snippet labelled
    for another category is a known negative only when it is one of that category's negatives
    (a threat often is impatient too, and nobody labelled it for impatience)."""

    best: np.ndarray  # [snippet, category]
    truth: np.ndarray  # [snippet, category] bool
    known: np.ndarray  # [snippet, category] bool


def snippet_scores(detector: Detector, lines: Sequence[Line]) -> SnippetScores:
    return _snippet_scores(lines, detector.scores([line.text for line in lines]))


def _snippet_scores(lines: Sequence[Line], scores: np.ndarray) -> SnippetScores:
    roles = _category_roles()
    order = list(dict.fromkeys(line.snippet for line in lines))
    row = {s: n for n, s in enumerate(order)}
    best = np.zeros((len(order), len(CATEGORIES)), dtype=np.float32)
    truth = np.zeros((len(order), len(CATEGORIES)), dtype=bool)
    known = np.zeros((len(order), len(CATEGORIES)), dtype=bool)
    for i, line in enumerate(lines):
        n = row[line.snippet]
        for k, category in enumerate(CATEGORIES):
            if roles[category] in (line.role, "any"):
                best[n, k] = max(best[n, k], scores[i, k])
            if line.category == category and line.positive:
                truth[n, k] = True
            known[n, k] = line.category == category or not line.positive
    return SnippetScores(best, truth, known)


def pooled(*parts: SnippetScores) -> SnippetScores:
    return SnippetScores(*(np.vstack([getattr(p, f) for p in parts]) for f in ("best", "truth", "known")))


def _fold_of(snippet: str, folds: int) -> int:
    return int.from_bytes(hashlib.sha256(snippet.encode()).digest()[:4], "big") % folds


def out_of_fold_scores(lines: Sequence[Line], y: np.ndarray, options: DetectorOptions) -> np.ndarray:
    """Each training line scored by a model fitted without its snippet's fold: what the
    detector says of phrasings it has not learnt, on many more snippets than dev has."""
    fold = np.array([_fold_of(line.snippet, options.threshold_folds) for line in lines])
    texts = np.array([line.text for line in lines], dtype=object)
    out = np.zeros(y.shape, dtype=np.float32)
    for f in range(options.threshold_folds):
        held = fold == f
        model = build_detector_pipeline(options).fit(*_augmented(list(texts[~held]), y[~held], options))
        out[held] = model.predict_proba(list(texts[held]))
        log.info("threshold fold %d/%d scored %d lines", f + 1, options.threshold_folds, int(held.sum()))
    return out


def choose_thresholds(s: SnippetScores, options: DetectorOptions) -> dict[str, float]:
    """Per category the lowest threshold whose snippet-level precision (over the snippets
    whose truth is known) reaches the target (1.0 when none does: the detector then never fires
    on its own)."""
    out = {}
    for k, category in enumerate(CATEGORIES):
        chosen = 1.0
        for t in sorted(set(np.round(s.best[:, k], 3)) | {options.min_threshold}, reverse=True):
            if t < options.min_threshold:
                break
            fired = (s.best[:, k] >= t) & s.known[:, k]
            if fired.sum() and s.truth[fired, k].mean() >= options.precision_target:
                chosen = float(t)
        out[category] = round(chosen, 3)
    return out


def split_metrics(s: SnippetScores, thresholds: dict[str, float]) -> dict[str, Any]:
    """Snippet-level precision (over the snippets whose truth is known) and recall per
    category at ``thresholds``."""
    per = {}
    for k, category in enumerate(CATEGORIES):
        fired = (s.best[:, k] >= thresholds[category]) & s.known[:, k]
        tp = int((fired & s.truth[:, k]).sum())
        per[category] = {"precision": round(tp / int(fired.sum()), 4) if fired.sum() else None,
                         "recall": round(tp / int(s.truth[:, k].sum()), 4) if s.truth[:, k].sum() else None,
                         "positives": int(s.truth[:, k].sum()), "fired": int(fired.sum())}
    return per


_LINE_CACHE = 65536  # lines whose parts of the decision are kept (a night's scripted lines)


class Detector:
    """A loaded detector: ``scores(texts)`` is [text, category] probabilities.

    One call's utterances are vectorised together and every category is one column of a
    single weight matrix: the same numbers as ``pipeline.predict_proba`` without fifteen
    rounds of scikit-learn's per-call validation (``test_detectors`` checks they agree)."""

    def __init__(self, pipeline, card: ModelCard):
        self.pipeline = pipeline
        self.card = card
        self.index = {c: k for k, c in enumerate(card.labels)}
        self.thresholds: dict[str, float] = dict(card.heldout_metrics.get("thresholds", {}))
        from .fast import CompiledFeatures

        members = [est.calibrated_classifiers_[0] for est in pipeline.named_steps["classifier"].estimators_]
        self._features = CompiledFeatures(pipeline.named_steps["features"])
        # artifacts trained before the context block read each utterance alone
        self.reads_context = "context" in dict(pipeline.named_steps["features"].transformer_list)
        self._weights = np.column_stack([m.estimator.coef_[0] for m in members]).astype(np.float64)
        self._intercepts = np.array([m.estimator.intercept_[0] for m in members])
        self._a = np.array([m.calibrators[0].a_ for m in members])
        self._b = np.array([m.calibrators[0].b_ for m in members])
        self._parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def call_scores(self, utterances: Sequence[str]) -> np.ndarray:
        """[utterance, category] probabilities for one call's utterance texts, in order: the
        numbers :meth:`scores` gives for their :func:`detector_inputs`, summed from each
        line's part of the decision, which depends on the line alone (its own n-gram blocks,
        and the context block where it is the utterance before), so a line seen before (好的,
        请稍等, the scripted openings) is not analysed again."""
        if not self.reads_context:
            return self.scores([line_text(t) for t in utterances])
        lines = [line_text(t) for t in utterances]
        if not lines:
            return self.scores([])
        parts = self._line_parts(lines)
        own = np.array([parts[line][0] for line in lines])
        context = np.array([parts[line][1] for line in lines])
        decision = own + self._intercepts
        # an utterance's context is the one before; an empty utterance has none
        follows = np.array([bool(line) for line in lines[1:]], dtype=bool)
        decision[1:][follows] += context[:-1][follows]
        return (1.0 / (1.0 + np.exp(self._a * decision + self._b))).astype(np.float32)

    def _line_parts(self, lines: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """line -> (its own blocks' part of the decision, its part as context), from the
        cache or computed for the new lines together."""
        from .fast import sparse_dot
        from .text import CONTEXT_MARK

        found, new = {}, []
        for line in dict.fromkeys(lines):
            part = self._parts.get(line)
            if part is None:
                new.append(line)
            else:
                found[line] = part
        if new:
            n = len(new)
            own = np.zeros((n, self._weights.shape[1]))
            context = np.zeros_like(own)
            for name in self._features.block_names:
                if name == "context":
                    row, col, val = self._features.block_batch(name, [CONTEXT_MARK + line if line else "" for line in new])
                    context += sparse_dot(row, col, val, self._weights[self._features.block_span(name)], n)
                else:
                    row, col, val = self._features.block_batch(name, new)
                    own += sparse_dot(row, col, val, self._weights[self._features.block_span(name)], n)
            computed = dict(zip(new, zip(own, context)))
            found.update(computed)
            if len(self._parts) + n > _LINE_CACHE:
                self._parts = {}  # rebound, not cleared: another thread may be reading it
            self._parts.update(computed)
        return found

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """[text, category] probabilities of detector inputs (:func:`detector_inputs`)."""
        if not texts:
            return np.zeros((0, len(self.index)), dtype=np.float32)
        from .fast import sparse_dot

        decision = np.zeros((len(texts), self._weights.shape[1])) + self._intercepts
        for name in self._features.block_names:
            row, col, val = self._features.block_batch(name, texts)
            decision += sparse_dot(row, col, val, self._weights[self._features.block_span(name)], len(texts))
        return (1.0 / (1.0 + np.exp(self._a * decision + self._b))).astype(np.float32)

    @property
    def provenance(self) -> dict[str, str]:
        return {"name": self.card.name, "version": self.card.version, "sha256": self.card.artifact_sha256}


def load_detector(models_dir: str | Path) -> Detector:
    from .persist import read_artifact

    pipeline, card = read_artifact(models_dir, DETECTOR_MODEL)
    n = len(getattr(pipeline.named_steps.get("classifier"), "estimators_", ()))
    if n != len(card.labels):
        raise ClassifierError(f"artifact has {n} category models, its card names {len(card.labels)}",
                              path=str(Path(models_dir) / card.artifact_file))
    return Detector(pipeline, card)


def _files_sha256(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def train_detector(corpus_root: str | Path, models_dir: str | Path,
                   options: DetectorOptions = DetectorOptions()) -> tuple[Detector, dict[str, Any]]:
    """Fit on the train split, choose thresholds on dev, report dev and test; save the
    artifact and card into ``models_dir``. Returns the detector and the figures."""
    import sklearn
    import skops

    from ..rules.corpus import SNIPPETS, read_snippets, read_split
    from .persist import TRUSTED_TYPES, save_model

    options.validate()
    corpus_root = Path(corpus_root)
    roles = _category_roles()
    extra = sorted((corpus_root / "extra").glob("train_*.jsonl"))
    train = corpus_lines(read_split(corpus_root, "train")[0] + [i for p in extra for i in read_snippets(p)])
    texts = [line.text for line in train]
    y = _targets(train, roles)
    first = build_detector_pipeline(options).fit(*_augmented(texts, y, options))
    y = _refine(train, y, np.asarray(first.predict_proba(texts)), options.carry_share)
    pipeline = build_detector_pipeline(options).fit(*_augmented(texts, y, options))
    created = datetime.now(timezone.utc).replace(microsecond=0)
    data_sha = _files_sha256([corpus_root / "train" / SNIPPETS, *extra])
    card = ModelCard(
        name=DETECTOR_MODEL, version=f"{created:%Y.%m.%d}-{data_sha[:8]}",
        description="per-category detectors of what is said, on one utterance (calibrated linear SVMs)",
        labels=list(CATEGORIES), positive_label=None, scope="utterance", created_at=created.isoformat(),
        sklearn_version=sklearn.__version__, skops_version=skops.__version__,
        python_version=platform.python_version(), training_data_sha256=data_sha,
        training={"files": ["data/eval/train/snippets.jsonl"] + [f"data/eval/extra/{p.name}" for p in extra],
                  "lines": len(train),
                  "positive_lines": {c: int(y[:, k].sum()) for k, c in enumerate(CATEGORIES)},
                  "noise": {"copies": options.noise_copies, "homophone_rate": options.noise_rate,
                            "drop_rate": options.drop_rate},
                  "features_version": FEATURES_VERSION},
        options=asdict(options),
        pipeline={"steps": ["features (chars and sounds of the utterance, sounds of the one before)",
                            "one-vs-rest calibrated LinearSVC"]},
        cv_metrics={}, heldout_metrics={}, artifact_file="", artifact_sha256="", artifact_bytes=0,
        trusted_types=list(TRUSTED_TYPES))
    detector = Detector(pipeline, card)
    dev = snippet_scores(detector, corpus_lines(read_split(corpus_root, "dev")[0]))
    train_oof = _snippet_scores(train, out_of_fold_scores(train, y, options))
    thresholds = choose_thresholds(pooled(train_oof, dev), options)
    test = snippet_scores(detector, corpus_lines(read_split(corpus_root, "test")[0]))
    figures = {"thresholds": thresholds, "train_out_of_fold": split_metrics(train_oof, thresholds),
               "dev": split_metrics(dev, thresholds), "test": split_metrics(test, thresholds)}
    card = save_model(pipeline, ModelCard(**{**asdict(card), "heldout_metrics": figures}), models_dir)
    log.info("trained detectors %s on %d lines", card.version, len(train))
    return Detector(pipeline, card), figures
