"""Fine-tuning regularisers: penalties that keep a fine-tuned model close to what it carried over.

Both are plain :class:`torch.nn.Module` objects returning a scalar; add them to the task loss in
any training loop::

    l2sp = L2SP(model, alpha=0.01, beta=0.01)        # copies the pretrained weights now
    bss = BatchSpectralShrinkage(k=1)
    feats = model.features(x)
    loss = task_loss(task, model.get_head()(feats), y) + l2sp() + 0.001 * bss(feats)

- :class:`L2SP` reads the model: ``α/2 ‖w_S − w_S⁰‖² + β/2 ‖w_S̄‖²`` (carried-over weights
  pulled toward their starting point, new weights toward zero).
- :class:`BatchSpectralShrinkage` reads a batch of features ``(B, d)``: ``Σ_{i=1..k} σ_{−i}²``
  (the k smallest singular values, squared).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from tlroutes.checks import non_negative, positive_int
from tlroutes.errors import ConfigError, DataError

_SEP = "__"  # stands for "." in buffer names (a buffer name may not contain a dot)


def _under(prefix: str, name: str) -> bool:
    """True when parameter ``name`` lies under module path (or equals parameter name) ``prefix``."""
    return name == prefix or name.startswith(prefix + ".")


def _mangle(name: str) -> str:
    return name.replace(".", _SEP)


class L2SP(nn.Module):
    r"""L2-SP: weight decay toward the starting point instead of toward zero.

    From Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with
    Convolutional Networks", ICML 2018:

    .. math::

        \Omega(w) = \frac{\alpha}{2} \lVert w_S - w_S^0 \rVert_2^2
                  + \frac{\beta}{2} \lVert w_{\bar S} \rVert_2^2

    where :math:`S` is the set of parameters carried over from the source model (here: those
    under ``include``), :math:`w_S^0` their values when this object is built, and :math:`\bar S`
    the parameters that are new for the target problem (those under ``new``, e.g. a fresh head),
    which get ordinary L2 decay.

    The starting point :math:`w^0` is **copied** (``detach().clone()``) when the object is built,
    so training never moves it, and it is held as persistent buffers: it is saved in
    :meth:`state_dict` (and in any checkpoint that saves this module), so a resumed run keeps
    pulling toward the same anchor. Buffer names are the parameter names with ``"."`` replaced by
    ``"__"`` under a child module ``anchor``, e.g. ``anchor.trunk__blocks__0__fc__weight``. The
    anchor moves to the parameters' device on the first call if it is elsewhere (or call
    ``.to(device)`` yourself).

    Only parameters that require gradients when :meth:`forward` runs count: a frozen part adds
    nothing, and unfreezing it later (e.g. the second stage of LP-FT) brings it in, pulled toward
    the values it had when this object was built. Anchors are kept for every matching parameter,
    frozen or not, for that reason. The model is not registered as a submodule, so this module's
    ``state_dict`` holds only the anchor.

    Use it with an optimizer whose ``weight_decay`` is 0 for the carried-over parameters
    (ordinary decay would pull them toward zero, against the anchor). The paper's values are
    around ``alpha=0.01`` to ``0.1`` and ``beta=0.01``.

    Args:
        model: the model being fine-tuned, in the state to stay close to (call this right after
            loading the source weights).
        alpha: strength of the pull of carried-over parameters toward their start. Default
            ``0.01``.
        beta: strength of ordinary L2 decay on new parameters. Default ``0.01``.
        include: module paths (or parameter names) of the carried-over parameters :math:`S`.
            Default ``("stems", "trunk")``.
        new: module paths (or parameter names) of the new parameters :math:`\bar S`. Default
            ``("heads",)``. Pass ``()`` for no decay on new parameters.

    Raises :class:`ConfigError` when a prefix in ``include`` or ``new`` matches no parameter,
    when a parameter falls under both, or when ``alpha`` or ``beta`` is negative.

    ``forward()`` takes no input and returns a scalar tensor (0-dim) on the parameters' device.
    """

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 0.01,
        beta: float = 0.01,
        include: Iterable[str] = ("stems", "trunk"),
        new: Iterable[str] = ("heads",),
    ) -> None:
        super().__init__()
        self.alpha = non_negative("L2SP alpha", alpha)
        self.beta = non_negative("L2SP beta", beta)
        include = [include] if isinstance(include, str) else list(include)
        new = [new] if isinstance(new, str) else list(new)
        if not include:
            raise ConfigError(
                "L2SP needs at least one prefix in `include` (the carried-over parts)."
            )
        named = list(model.named_parameters())
        names = [n for n, _ in named]
        empty = [p for p in include + new if not any(_under(p, n) for n in names)]
        if empty:
            shown = ", ".join(names[:6]) + (" …" if len(names) > 6 else "")
            raise ConfigError(
                f"L2SP: {', '.join(repr(p) for p in empty)} matched no parameter of the model. "
                f"Parameter names look like: {shown}. Pass module paths such as 'trunk' or "
                "'stems.<name>' (and new=() when the model has no new parts)."
            )
        carried = [n for n in names if any(_under(p, n) for p in include)]
        fresh = [n for n in names if any(_under(p, n) for p in new)]
        both = sorted(set(carried) & set(fresh))
        if both:
            raise ConfigError(
                f"L2SP: parameter(s) {', '.join(both[:3])} fall under both `include` and `new`; "
                "a parameter is either carried over or new."
            )
        mangled = [_mangle(n) for n in carried]
        if len(set(mangled)) != len(mangled):
            raise ConfigError(
                "L2SP: two parameter names differ only by '.' versus '__', so their anchors "
                "would share a buffer name; rename the modules."
            )
        # The model is kept out of the module tree: its weights must not enter our state_dict.
        object.__setattr__(self, "_model", model)
        self.carried: tuple[str, ...] = tuple(carried)
        self.new: tuple[str, ...] = tuple(fresh)
        self.anchor = nn.Module()
        params = dict(named)
        for name, key in zip(carried, mangled, strict=True):
            self.anchor.register_buffer(key, params[name].detach().clone(), persistent=True)

    def start(self, name: str) -> Tensor:
        """The anchor :math:`w^0` of carried-over parameter ``name`` (a buffer; do not edit)."""
        if name not in self.carried:
            raise ConfigError(f"L2SP holds no anchor for '{name}'; it is not a carried parameter.")
        return getattr(self.anchor, _mangle(name))

    def _params(self) -> dict[str, nn.Parameter]:
        params = dict(self._model.named_parameters())
        missing = [n for n in self.carried + self.new if n not in params]
        if missing:
            raise ConfigError(
                f"L2SP: the model no longer has parameter(s) {', '.join(missing[:3])} (was it "
                "changed after the regulariser was built, e.g. by apply_lora?). Build L2SP after "
                "the model's final structure is set."
            )
        return params

    def forward(self) -> Tensor:
        """The penalty :math:`\\Omega(w)` as a scalar; differentiable in the model's weights."""
        params = self._params()
        device = params[self.carried[0]].device
        if self.start(self.carried[0]).device != device:
            self.to(device)
        pull = torch.zeros((), device=device)
        decay = torch.zeros((), device=device)
        for name in self.carried:
            p = params[name]
            if p.requires_grad:
                pull = pull + (p - self.start(name)).pow(2).sum()
        for name in self.new:
            p = params[name]
            if p.requires_grad:
                decay = decay + p.pow(2).sum()
        return 0.5 * self.alpha * pull + 0.5 * self.beta * decay

    @torch.no_grad()
    def distance(self) -> Tensor:
        """``‖w_S − w_S⁰‖₂`` over every carried-over parameter (frozen ones too), without grad.

        A number worth logging: how far fine-tuning has moved the carried-over weights.
        """
        params = self._params()
        total = sum(
            (params[n].detach() - self.start(n).to(params[n].device)).pow(2).sum().cpu()
            for n in self.carried
        )
        return torch.as_tensor(total).sqrt()

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, carried={len(self.carried)} tensors, "
            f"new={len(self.new)} tensors"
        )


class BatchSpectralShrinkage(nn.Module):
    r"""BSS: shrink the smallest singular values of a batch of features.

    From Chen, Wang, Fu, Long & Wang, "Catastrophic Forgetting Meets Negative Transfer: Batch
    Spectral Shrinkage for Safe Transfer Learning", NeurIPS 2019. For a feature matrix
    :math:`F \in \mathbb{R}^{B \times d}` with singular values
    :math:`\sigma_1 \ge \dots \ge \sigma_m` (:math:`m = \min(B, d)`):

    .. math::

        L_{bss}(F) = \sum_{i=1}^{k} \sigma_{-i}^2

    where :math:`\sigma_{-i}` is the :math:`i`-th *smallest* singular value: the squared
    :math:`k` smallest singular values. The paper argues that the spectral components with small
    singular values carry source-specific knowledge that transfers negatively; shrinking them
    helps, most of all with little target data. (Same definition as TLlib's
    ``BatchSpectralShrinkage``; the transpose :math:`F^\top` has the same singular values.)

    The module returns the unweighted sum; scale it yourself. The paper adds
    :math:`\eta L_{bss}` to the task loss with :math:`\eta = 0.001` and :math:`k = 1`, applied
    to the trunk's features (before the head), on source-pretrained models being fine-tuned.

    Args:
        k: how many of the smallest singular values to penalise. Default ``1``. When a batch
            has fewer than ``k`` singular values (``min(B, d) < k``, e.g. a small last batch),
            all of them are used.

    Shapes: ``features`` ``(B, d)`` → a scalar (0-dim). Half-precision input is computed in
    float32 (SVD needs it) and the result returned in float32. Gradients flow through
    :func:`torch.linalg.svdvals`.
    """

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        self.k = positive_int("BatchSpectralShrinkage k", k)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 2:
            raise DataError(
                "BatchSpectralShrinkage reads features of shape (B, d), got shape "
                f"{tuple(features.shape)}; flatten or pool them first."
            )
        if features.shape[0] == 0 or features.shape[1] == 0:
            raise DataError(f"BatchSpectralShrinkage got an empty batch {tuple(features.shape)}.")
        if features.dtype in (torch.float16, torch.bfloat16) or not features.is_floating_point():
            features = features.float()
        sv = torch.linalg.svdvals(features)  # descending
        k = min(self.k, sv.shape[-1])
        return sv[-k:].pow(2).sum()

    def extra_repr(self) -> str:
        return f"k={self.k}"
