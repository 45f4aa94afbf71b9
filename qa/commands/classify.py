"""Classifier commands: ``qa train`` and ``qa evaluate``."""

from __future__ import annotations

from typing import Any

import click

# the classifiers pull in scikit-learn and skops (seconds to import): only the commands that
# need them import them, so that every other ``qa`` command starts fast
from ..classifiers.specs import MODEL_NAMES
from .common import App, domain_errors, echo_table, pass_app

_model_arg = click.argument("model", required=False, type=click.Choice(MODEL_NAMES))
_models_dir_opt = click.option("--models-dir", type=click.Path(file_okay=False),
                               help="Where the .skops artifacts and model cards live (default: setting models_dir).")


@click.command("train")
@_model_arg
@click.option("--from-reviews", is_flag=True,
              help="Add examples from the database to the seed corpus: inspectors' confirmed/rejected "
                   "findings, and stereo calls' utterances for the role model.")
@_models_dir_opt
@pass_app
@domain_errors
def train_cmd(app: App, model: str | None, from_reviews: bool, models_dir: str | None) -> None:
    """Train MODEL (default: all five) on the seed corpus and write artifact + model card."""
    from ..classifiers.training import train

    target = models_dir or app.settings.models_dir
    names = (model,) if model else MODEL_NAMES
    reviews = None
    if from_reviews:
        from ..review.harvest import review_examples

        with app.session_factory() as session:
            reviews = review_examples(session, names)
    results = train(names, target, reviews=reviews)
    rows = []
    for r in results:
        c = r.card
        rows.append((c.name, c.version, c.training["seed_train_examples"], c.training["review_examples"],
                     f"{c.cv_metrics['macro_f1']:.4f}", f"{c.heldout_metrics['macro_f1']:.4f}",
                     f"{c.heldout_metrics['accuracy']:.4f}"))
    echo_table(rows, ("model", "version", "seed examples", "review examples", "cv macro F1",
                      "held-out macro F1", "held-out accuracy"))
    click.echo(f"\nwritten to {target}")


def _echo_metrics(title: str, metrics: dict[str, Any]) -> None:
    click.echo(f"{title}: n={metrics['n']}  accuracy={metrics['accuracy']:.4f}  macro F1={metrics['macro_f1']:.4f}")
    rows = [(label, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"])
            for label, m in metrics["per_class"].items()]
    echo_table(rows, ("class", "precision", "recall", "F1", "support"))
    labels = metrics["confusion_matrix"]["labels"]
    click.echo("confusion matrix (rows: true, columns: predicted)")
    echo_table([(label, *row) for label, row in zip(labels, metrics["confusion_matrix"]["matrix"])],
               ("", *labels))


@click.command("evaluate")
@_model_arg
@_models_dir_opt
@pass_app
@domain_errors
def evaluate_cmd(app: App, model: str | None, models_dir: str | None) -> None:
    """Print held-out metrics of MODEL (default: all), recomputed with the stored artifact,
    and the cross-validated metrics recorded in its model card."""
    from ..classifiers.training import evaluate

    target = models_dir or app.settings.models_dir
    mismatched = []
    for n, ev in enumerate(evaluate((model,) if model else None, target)):
        c = ev.card
        if n:
            click.echo("")
        click.echo(f"== {c.name}  version {c.version}  (trained {c.created_at}, scikit-learn {c.sklearn_version})")
        click.echo(f"artifact sha256 {c.artifact_sha256}")
        click.echo(f"training data sha256 {c.training_data_sha256}  ({c.training['seed_train_examples']} seed + "
                   f"{c.training['review_examples']} review examples)")
        _echo_metrics("held-out (templates never seen in training)", ev.heldout_metrics)
        context = ev.heldout_metrics.get("in_context")
        if context:
            _echo_metrics(f"held-out in context ({context['dialogues']} dialogues of unseen templates, "
                          "model + turn-taking as mono transcription uses it)", context)
            click.echo(f"same dialogue utterances, model alone: accuracy={context['utterance_only_accuracy']:.4f}"
                       f"  cue-word heuristic: accuracy={context['heuristic_accuracy']:.4f}")
        _echo_metrics(f"cross-validated ({c.cv_metrics['folds']}-fold on the training split, from the card)",
                      c.cv_metrics)
        click.echo(f"held-out metrics match the model card: {'yes' if ev.matches_card else 'NO'}")
        if not ev.matches_card:
            mismatched.append(c.name)
    if mismatched:
        raise click.ClickException(f"held-out metrics differ from the model card for {', '.join(mismatched)}")


def register(group: click.Group) -> None:
    group.add_command(train_cmd)
    group.add_command(evaluate_cmd)
