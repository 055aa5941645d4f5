"""Task Fine-Tuning: train on the source, carry stems and trunk over, fine-tune on the target.

Same task kind, same domain, one after the other (ImageNet classifier → dog-breed classifier).
The recipe: pretrain on the source; keep the stem and trunk; give the target a new head (or keep
the source head when the label sets are identical); fine-tune everything on the target. The
baseline is the same architecture trained from scratch on the target with the same budget.
"""

from __future__ import annotations

from typing import Any

from tlroutes.backbones import create_head
from tlroutes.config import RunSpec
from tlroutes.matrix import Route
from tlroutes.model import build_model
from tlroutes.routes.common import evaluate, load, require_fit, summarise, supervised_stage
from tlroutes.train.engine import Trainer

ROUTE = Route.TASK_FINE_TUNING


def run(spec: RunSpec, trainer: Trainer) -> dict[str, Any]:
    """Run the recipe; returns the summary (see :func:`tlroutes.routes.common.summarise`)."""
    source = load(spec.source, spec.seed, "source")
    target = load(spec.target, spec.seed, "target")
    require_fit(ROUTE, source, target)
    m = spec.model

    trainer.seed_for("model")
    model = build_model({"input": source.domain}, {"source": source.task}, m.trunk,
                        m.trunk_args, m.stem, m.stem_args)
    pretrain = trainer.fit(supervised_stage("source", model, source, spec.source_training,
                                            spec.seed, head="source"))

    trainer.seed_for("target-head")
    if source.task.labels == target.task.labels:
        model.add_head("target", model.get_head("source"), target.task)
    else:
        model.add_head("target", create_head(target.task, model.trunk.out_dim), target.task)
    model.remove_head("source")
    finetune = trainer.fit(supervised_stage("target", model, target, spec.target_training,
                                            spec.seed, head="target"))
    metrics = evaluate(model, target.test, target.task, head="target")

    baseline = None
    if spec.baseline:
        trainer.seed_for("baseline-model")
        scratch = build_model({"input": target.domain}, {"target": target.task}, m.trunk,
                              m.trunk_args, m.stem, m.stem_args)
        trainer.fit(supervised_stage("baseline", scratch, target, spec.target_training,
                                     spec.seed))
        baseline = evaluate(scratch, target.test, target.task)

    return summarise(
        ROUTE, target.task, metrics, baseline,
        carried_over="stem and trunk" + (" and head" if source.task.labels ==
                                         target.task.labels else ""),
        source={"problem": source.name, "best_val": pretrain.best_score},
        target={"problem": target.name, "best_val": finetune.best_score},
    )
