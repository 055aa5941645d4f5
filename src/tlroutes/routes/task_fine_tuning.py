"""Task Fine-Tuning: train on the source, carry stem and trunk over, fine-tune on the target.

Same task kind, same domain, one after the other (ImageNet classifier → dog-breed classifier).

Recipe:
1. ``source``: train on the source problem (skipped when ``source: null``: the pretrained trunk
   is the source).
2. Carry stem and trunk over; the target gets a new head (the source head is kept when the label
   sets are identical).
3. Optionally ``probe`` (LP-FT, Kumar et al. ICLR 2022): train only the head with the rest frozen;
   or unfreeze gradually (ULMFiT), one part per phase.
4. ``target``: fine-tune with discriminative learning rates, optionally regularised toward the
   starting weights (L2-SP) or against untransferable spectral components (BSS), or through
   LoRA adapters.
5. ``baseline``: the same architecture from scratch on the target, same budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field
from torch import Tensor, nn

from tlroutes.backbones import create_head
from tlroutes.config import RunSpec
from tlroutes.matrix import Route
from tlroutes.model import TransferModel, freeze, param_groups, unfreeze
from tlroutes.objectives.regularizers import L2SP, BatchSpectralShrinkage
from tlroutes.objectives.tasks import task_loss
from tlroutes.problem import Task
from tlroutes.reporting.collect import RunData
from tlroutes.reporting.details import details_blocks
from tlroutes.reporting.document import Block
from tlroutes.routes.common import RecipeSpec, load_pair, pretrain, scratch_baseline, summarise
from tlroutes.routes.registry import Advice, RouteProse, Sharing
from tlroutes.summary import Summary
from tlroutes.train.engine import Trainer
from tlroutes.train.from_spec import evaluate, stage, stream, supervised_stage

if TYPE_CHECKING:
    from tlroutes.measure.evidence import Evidence
    from tlroutes.problem import Problem

ROUTE = Route.TASK_FINE_TUNING

LP_FT_BELOW = 30
"""Training samples per output below which the plan recommends LP-FT over full fine-tuning."""


class Recipe(RecipeSpec):
    """Task Fine-Tuning settings (the run file's ``recipe:`` block)."""

    schedule: Literal["full", "lp_ft", "gradual", "linear_probe"] = Field(
        "full", description="'full' (default): fine-tune everything at once; 'lp_ft': linear "
        "probe first, then fine-tune everything; 'gradual': unfreeze the parts in `unfreeze` "
        "one per phase, top first; 'linear_probe': train only the new head.",
    )
    probe_epochs: int = Field(
        5, ge=1, description="Epochs of the head-only probe (lp_ft, linear_probe) and of each "
        "gradual-unfreezing phase. Default 5.",
    )
    probe_lr: float = Field(1e-2, gt=0, description="Learning rate of the probe. Default 1e-2.")
    unfreeze: list[str] = Field(
        default_factory=lambda: ["trunk", "stems"], description="'gradual' only: parts or "
        "parameter patterns unfrozen one per phase, in this order. Default [trunk, stems].",
    )
    lr_multipliers: dict[str, float] = Field(
        default_factory=dict, description="Discriminative learning rates for the fine-tuning "
        "stage: part or pattern → multiple of the base lr, e.g. {stems: 0.1, trunk: 0.3}. "
        "Default {} (one lr).",
    )
    regularizer: Literal["none", "l2sp", "bss"] = Field(
        "none", description="'l2sp': pull carried-over weights toward their starting point; "
        "'bss': shrink the smallest singular values of the features. Default 'none'.",
    )
    l2sp_alpha: float = Field(0.01, ge=0, description="L2-SP weight on the carried-over "
                              "parameters' distance to the start. Default 0.01.")
    l2sp_beta: float = Field(0.01, ge=0, description="L2-SP weight decay on the new head. "
                             "Default 0.01.")
    bss_k: int = Field(1, ge=1, description="BSS: how many smallest singular values. Default 1.")
    bss_weight: float = Field(1e-3, ge=0, description="BSS loss weight. Default 1e-3.")
    lora_rank: int | None = Field(
        None, ge=1, description="Fine-tune through LoRA adapters of this rank on the trunk "
        "(needs the 'lora' extra); the trunk's own weights stay frozen. Default: no LoRA.",
    )
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha. Default 16.")


class FineTuneStep(nn.Module):
    """Target loss of one head, plus the recipe's regulariser."""

    def __init__(self, model: TransferModel, task: Task, head: str,
                 l2sp: L2SP | None = None, bss: BatchSpectralShrinkage | None = None,
                 bss_weight: float = 0.0) -> None:
        super().__init__()
        self.model, self.task, self.head = model, task, head
        self.l2sp, self.bss, self.bss_weight = l2sp, bss, bss_weight

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]):
        x, y = batch["train"]
        features = self.model.features(x)
        loss = task_loss(self.task, self.model.heads[self.head](features), y)
        if self.l2sp is None and self.bss is None:
            return loss
        penalty = self.l2sp() if self.l2sp is not None else self.bss_weight * self.bss(features)
        return loss + penalty, {"penalty": penalty}


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer) -> Summary:
    """Run the recipe; returns the summary (see :func:`tlroutes.routes.common.summarise`)."""
    source, target = load_pair(ROUTE, spec)
    model = pretrain(spec, trainer, source, target)

    trainer.seed_for("target-head")
    keep_head = source is not None and source.task.labels == target.task.labels
    head = model.get_head("source") if keep_head else create_head(target.task,
                                                                  model.trunk.out_dim)
    model.add_head("target", head, target.task)
    model.remove_head("source")
    carried = ["stem", "trunk"] + (["head"] if keep_head else [])

    t = spec.target_training
    if recipe.schedule in ("lp_ft", "linear_probe"):
        freeze(model, parts=["stems", "trunk"])
        trainer.fit(supervised_stage("probe", model, target, t, spec.seed, head="target",
                                     epochs=recipe.probe_epochs, lr=recipe.probe_lr,
                                     eval_modules=[model.stems, model.trunk]))
        unfreeze(model, parts=["stems", "trunk"])
    elif recipe.schedule == "gradual":
        freeze(model, parts=["stems", "trunk"])
        # Phase 0 trains the head alone; phase i has the first i parts unfrozen as well; the
        # last part thaws in the fine-tuning stage, where everything trains.
        for i, part in enumerate([None, *recipe.unfreeze[:-1]]):
            if part is not None:
                _thaw(model, part)
            trainer.fit(supervised_stage(f"unfreeze-{i}", model, target, t, spec.seed,
                                         head="target", epochs=recipe.probe_epochs))
        unfreeze(model, parts=["stems", "trunk"])

    if recipe.schedule != "linear_probe":
        if recipe.lora_rank is not None:
            from tlroutes.lora import apply_lora

            apply_lora(model, r=recipe.lora_rank, alpha=recipe.lora_alpha)
        l2sp = (L2SP(model, alpha=recipe.l2sp_alpha, beta=recipe.l2sp_beta)
                if recipe.regularizer == "l2sp" else None)
        bss = BatchSpectralShrinkage(recipe.bss_k) if recipe.regularizer == "bss" else None
        step = FineTuneStep(model, target.task, "target", l2sp, bss, recipe.bss_weight)
        groups = (param_groups(model, t.lr, recipe.lr_multipliers, t.weight_decay)
                  if recipe.lr_multipliers else None)
        trainer.fit(stage("target", step, {"train": stream(target.train, t, spec.seed, "target")},
                          lambda: evaluate(model, target.val, target.task, head="target"),
                          target.task, t, param_groups=groups))
    metrics = evaluate(model, target.test, target.task, head="target")
    trainer.save_model(model)

    baseline = scratch_baseline(spec, trainer, target)

    return summarise(
        ROUTE, target.task, metrics, baseline,
        carried_over=" and ".join(carried), schedule=recipe.schedule,
        regularizer=recipe.regularizer, source=source.name if source else spec.model.trunk,
        target=target.name,
    )


def _thaw(model: nn.Module, part: str) -> None:
    """Unfreeze a part ('trunk', 'trunk.stages.1') or a parameter pattern ('*norm*')."""
    if any(c in part for c in "*?["):
        unfreeze(model, patterns=[part])
    else:
        unfreeze(model, parts=[part])


# --------------------------------------------------------------------------------------------------
# Prose and advice (what `tlroutes routes --explain`, the report and `tlroutes plan` say)
# --------------------------------------------------------------------------------------------------

PROSE = RouteProse(
    "Pretrain on a broad dataset, then fine-tune the whole network on a narrower dataset of the "
    "same domain and the same kind of task, with a new head for the new labels.",
    example="ImageNet classifier → dog-breed classifier",
    sharing=Sharing(stems="carried over", trunk="carried over, fine-tuned",
                    heads="new head, same kind", stages="source → target"),
)


def recommend(problems: dict[str, Problem], evidence: Evidence | None,
              warnings: list[str]) -> Advice:
    """The plan's advice: LP-FT when the target has few samples per output, else full."""
    target = list(problems.values())[-1]
    per_class = len(target.train) / max(target.task.num_outputs, 1)
    if per_class < LP_FT_BELOW:
        return {"schedule": "lp_ft"}, {"schedule": (
            f"{per_class:.0f} training samples per output: fit the head on frozen features "
            "first (LP-FT) so the new head does not distort the carried-over features.")}
    return {"schedule": "full"}, {"schedule": (
        f"{per_class:.0f} training samples per output: enough to fine-tune everything.")}


# --------------------------------------------------------------------------------------------------
# Report (the report's route section; see tlroutes.routes.registry for the protocol)
# --------------------------------------------------------------------------------------------------


def report_blocks(run: RunData, *, tsne: bool = True) -> list[Block]:
    """The report's route section: the run's settings and extra measurements
    (schedule, regulariser)."""
    return details_blocks(run)


#: The run file's top-level blocks this route reads besides those every run reads (route, order,
#: constraints, seed, seeds, recipe, hardware, tracking); another one set is refused at resolve.
RUN_FILE_BLOCKS: frozenset[str] = frozenset(
    {"source", "target", "model", "source_training", "target_training", "baseline"})
