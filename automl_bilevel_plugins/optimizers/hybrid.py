"""The ``hybrid`` outer optimizer: a black-box optimizer over the discrete part of the space,
hypergradient steps over the continuous part inside each trial.

The space is split in two:

- the *continuous* part: the floats of the space that the learner differentiates
  (``differentiable_hyperparameters(task)``), plus ``tensor_hyperparameters`` such as
  ``l2_per_feature`` (one weight per input feature). ``continuous=[...]`` overrides the derived list.
  A float that is the parent of a condition or appears in a forbidden clause stays black-box (when
  derived; named in ``continuous`` it is refused);
- the *black-box* part: everything else (categoricals, integers, floats the learner cannot
  differentiate), searched by any registered optimizer that accepts the space (``blackbox``:
  ``smac`` by default, ``random``, ``es``, a third-party one; ``blackbox_params`` configure it),
  made through the registry like any component.

A trial is one black-box proposal. Its evaluation (stateless, so it runs on Dask workers) builds the
sub-problem: the same learner, objective and data, with a space that holds the proposed black-box
values as constants and the active continuous hyperparameters as floats whose defaults are the
starting point (the space's defaults, or with ``warm_start`` the tuned values of the best trial so far).
It then runs ``steps`` outer steps of the ``hypergradient`` optimizer on it in the one search loop
(a nested, in-process :func:`automl_bilevel.run.engine.run_search`). The trial's value is the best outer
objective reached; the tuned values go back to ``tell`` (``Evaluation.extra``) and are recorded in the
trial's metrics (``tuned.<name>``; tensors as ``tuned.<name>.mean``), next to every outer step's value
(``outer_value.<k>``). ``best_config()`` is the best trial's black-box values plus its tuned values,
so the estimator refits with them.

With ``inner="online"`` a trial is one training run instead: the ``online`` optimizer tunes the
continuous part *during* that run (``online_params``: its ``every``, ``mode``, ``truncate``,
``val_batch``; outer learning rate, clipping and back-off are hybrid's own), the trial's value is the
validation objective at the run's end and its tuned values the run's final ones (``online_updates``
and ``outer_value.<k>`` per update are in its metrics). ``steps``, ``mode``, ``truncate`` and
``inner_steps`` are settings of the ``hypergradient`` inner only.

Conditions are respected: a continuous hyperparameter inactive under the proposed black-box values is
neither in the trial's configuration nor differentiated. With a multi-fidelity black-box optimizer
(``smac`` with ``facade="mf"`` / ``"hb"``), a trial's budget scales the number of hypergradient steps
and the inner training (the learner's epochs). A failed step (a diverging inner run, a NaN
hypergradient) is rejected as in ``hypergradient``; the trial reports the best value reached, and
fails only when no step succeeded.

Resuming (checkpoint): the optimizer saves, with every trial, the records its black-box part needs and
the tuned values of each trial (tensors included); a resumed run replays them into the black-box
optimizer and restores the tuned values, so the refit of a resumed run uses them too.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from ConfigSpace.hyperparameters import FloatHyperparameter

from automl_bilevel import OptimizerSpec, OuterOptimizer, Proposal, as_configspace, config_dict, hookimpl
from automl_bilevel.core.components import DeclaresRequirements, DifferentiableLearner
from automl_bilevel.core.problem import BilevelProblem
from automl_bilevel.core.trials import Evaluation, Trial, best_trial
from automl_bilevel.core.validation import validate_params
from automl_bilevel.run.safe_io import numpy_to_plain, plain_to_numpy

#: kinds of differentiable hyperparameters that live in the ConfigSpace as floats
_SCALAR_KINDS = ("positive", "unit")
#: what tunes the continuous part inside a trial: ``steps`` outer steps of ``hypergradient`` (each a
#: training) or one ``online`` training run
INNER = ("hypergradient", "online")
#: online settings hybrid passes itself (its own parameters), refused in ``online_params``
_SHARED_WITH_ONLINE = frozenset(
    {
        "outer_lr",
        "outer_optimizer",
        "clip",
        "tensor_hyperparameters",
        "tensor_init",
        "max_backoffs",
        "backoff",
        "budget",
    }
)


@dataclass(frozen=True)
class HybridPoint:
    """What a hybrid proposal carries to its (maybe remote) evaluation."""

    token: int
    blackbox: Mapping[str, Any]  # the black-box optimizer's proposed values
    start: Mapping[str, Any]  # starting values of the active continuous hyperparameters (scalars and tensors)
    steps: int  # hypergradient steps for this trial (scaled by the budget)


def _condition_names(cond: Any) -> list[tuple[str, str]]:
    """(child, parent) pairs of a condition or conjunction."""
    return [(lit.child.name, lit.parent.name) for lit in (getattr(cond, "dlcs", None) or [cond])]


def _forbidden_names(clause: Any) -> set[str]:
    out: set[str] = set()
    for attr in ("hyperparameter", "left", "right"):
        hp = getattr(clause, attr, None)
        if hp is not None and hasattr(hp, "name"):
            out.add(hp.name)
    for part in list(getattr(clause, "components", None) or ()) + list(getattr(clause, "dlcs", None) or ()):
        if part is not clause:
            out |= _forbidden_names(part)
    return out


def split_space(
    space: Any, differentiable: Mapping[str, str], continuous: Sequence[str] | None = None
) -> tuple[list[str], Any]:
    """The continuous hyperparameter names and the black-box ConfigurationSpace of ``space``.

    Derived: every float the learner differentiates (``differentiable``: name -> kind) that is neither
    the parent of a condition nor in a forbidden clause. ``continuous`` (names) overrides it; a name
    that is not such a float is refused with the reason.
    """
    from ConfigSpace import ConfigurationSpace, UniformFloatHyperparameter

    parents = {p for cond in space.conditions for _, p in _condition_names(cond)}
    forbidden = (
        set().union(*(_forbidden_names(c) for c in space.forbidden_clauses)) if space.forbidden_clauses else set()
    )

    def why_not(name: str) -> str | None:
        if name not in space:
            return f"it is not in the search space (which has: {', '.join(sorted(space.keys()))})"
        if not isinstance(space[name], UniformFloatHyperparameter):
            return f"it is a {type(space[name]).__name__}, not a float range"
        if differentiable.get(name) not in _SCALAR_KINDS:
            scalars = sorted(k for k, v in differentiable.items() if v in _SCALAR_KINDS)
            return f"the learner does not differentiate it (it differentiates {scalars})"
        if name in parents:
            return "other hyperparameters are conditioned on it"
        if name in forbidden:
            return "it appears in a forbidden clause"
        return None

    if continuous is None:
        names = [hp.name for hp in space.values() if why_not(hp.name) is None]
    else:
        names = list(continuous)
        for name in names:
            reason = why_not(name)
            if reason is not None:
                raise ValueError(f"hybrid: {name!r} cannot be tuned by hypergradients: {reason}")
        if len(set(names)) != len(names):
            raise ValueError(f"hybrid: continuous names a hyperparameter twice: {names}")
    keep = [hp for hp in space.values() if hp.name not in names]
    bb = ConfigurationSpace(seed=None)
    bb.add(keep)
    kept = {hp.name for hp in keep}
    bb.add([c for c in space.conditions if all(ch in kept and p in kept for ch, p in _condition_names(c))])
    bb.add(list(space.forbidden_clauses))
    return names, bb


def _active(space: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without the hyperparameters their conditions make inactive."""
    from ConfigSpace.util import deactivate_inactive_hyperparameters

    full = {**{hp.name: hp.default_value for hp in space.values()}, **values}  # it needs every value first
    return config_dict(deactivate_inactive_hyperparameters(full, space))


def _sub_space(space: Any, blackbox: Mapping[str, Any], start: Mapping[str, Any]) -> Any:
    """The sub-problem's space: the black-box values as constants, the active continuous floats
    with their starting values as defaults."""
    from ConfigSpace import ConfigurationSpace, Constant, Float

    out = ConfigurationSpace()
    for name, value in blackbox.items():
        out.add(Constant(name, value))
    for name, value in start.items():
        if name not in space:  # a tensor hyperparameter: not part of the ConfigSpace
            continue
        hp = space[name]
        lo, hi = float(hp.lower), float(hp.upper)
        out.add(Float(name, (lo, hi), log=hp.log, default=min(max(float(value), lo), hi)))
    return out


def evaluate_hybrid(problem: Any, proposal: Proposal, settings: Mapping[str, Any]) -> Evaluation:
    """Evaluate one hybrid proposal: ``point.steps`` hypergradient steps on the sub-problem, in a nested
    search loop (stateless: a pure function of the problem, the proposal and the settings)."""
    from automl_bilevel.run.engine import run_search
    from automl_bilevel_plugins.optimizers.hypergradient import HypergradientOptimizer

    point = proposal.info
    if not isinstance(point, HybridPoint):
        raise TypeError(f"a hybrid proposal carries a HybridPoint, got {type(point).__name__}")
    tensors = tuple(settings["tensor_hyperparameters"])
    scalars = [k for k in point.start if k not in tensors]
    if not scalars and not tensors:  # nothing active to differentiate: a plain evaluation
        return problem.evaluate(dict(point.blackbox), budget=proposal.budget)
    sub = BilevelProblem(
        problem.learner,
        problem.objective,
        _sub_space(problem.space, point.blackbox, point.start),
        problem.task,
        problem.splits,
        problem.seed,
    )
    if settings.get("inner") == "online":
        return _evaluate_online(sub, proposal, settings, scalars, tensors, point)
    inner_steps = settings["inner_steps"]
    if inner_steps is not None and proposal.budget is not None:
        inner_steps = max(1, round(inner_steps * float(proposal.budget)))
    hg = HypergradientOptimizer(
        mode=settings["mode"],
        outer_lr=settings["outer_lr"],
        outer_optimizer=settings["outer_optimizer"],
        clip=settings["clip"],
        inner_steps=inner_steps,
        truncate=settings["truncate"],
        tensor_hyperparameters=tensors,
        tensor_init={k: np.asarray(point.start[k]) for k in tensors if k in point.start},
        max_backoffs=settings["max_backoffs"],
        backoff=settings["backoff"],
    )
    if inner_steps is None and proposal.budget is not None:  # the learner scales its epochs by the budget
        hg.options["budget"] = float(proposal.budget)
    result = run_search(sub, hg, n_iter=point.steps, seed=problem.seed)
    done = [t for t in result.trials if t.ok]
    if not done:
        errors = sorted({t.error for t in result.trials if t.error})
        raise FloatingPointError(
            f"no hypergradient step of the trial succeeded ({len(result.trials)} tried): "
            f"{'; '.join(errors[:2]) or 'non-finite objective'}"
        )
    best = min(done, key=lambda t: (t.value, t.number))
    tuned_all = hg.best_config() or {}
    tuned = {k: tuned_all[k] for k in (*scalars, *tensors) if k in tuned_all}
    metrics: dict[str, float] = {
        "outer_steps": float(len(result.trials)),
        "rejected_steps": float(len(result.trials) - len(done)),
        "best_step": float(best.number),
    }
    for t in result.trials:
        metrics[f"outer_value.{t.number}"] = float(t.value)
    for k, v in tuned.items():
        arr = np.asarray(v, dtype=np.float64)
        if arr.ndim == 0:
            metrics[f"tuned.{k}"] = float(arr)
        else:
            metrics[f"tuned.{k}.mean"] = float(arr.mean())
    return Evaluation(float(best.value), metrics, extra=tuned)


def _evaluate_online(
    sub: BilevelProblem,
    proposal: Proposal,
    settings: Mapping[str, Any],
    scalars: Sequence[str],
    tensors: tuple[str, ...],
    point: HybridPoint,
) -> Evaluation:
    """One online training run on the sub-problem (``inner="online"``): the trial's value is the validation
    objective at the run's end, its tuned values the run's final ones."""
    from automl_bilevel.run.engine import run_search
    from automl_bilevel_plugins.optimizers.online import OnlineOptimizer

    opt = OnlineOptimizer(
        **settings["online_params"],
        outer_lr=settings["outer_lr"],
        outer_optimizer=settings["outer_optimizer"],
        clip=settings["clip"],
        tensor_hyperparameters=tensors,
        tensor_init={k: np.asarray(point.start[k]) for k in tensors if k in point.start},
        max_backoffs=settings["max_backoffs"],
        backoff=settings["backoff"],
        budget=None if proposal.budget is None else float(proposal.budget),
    )
    # the run ends itself (its last segment) or by max_backoffs; n_iter only bounds the retries
    result = run_search(sub, opt, n_iter=1_000_000, seed=sub.seed)
    done = [t for t in result.trials if t.ok]
    if not done or opt.t < opt.T:
        errors = sorted({t.error for t in result.trials if t.error})
        raise FloatingPointError(
            f"the online run stopped at inner step {opt.t} of {opt.T} after {len(result.trials)} segments: "
            f"{'; '.join(errors[:2]) or 'non-finite objective'}"
        )
    tuned_all = opt.best_config() or {}
    tuned = {k: tuned_all[k] for k in (*scalars, *tensors) if k in tuned_all}
    metrics: dict[str, float] = {
        "online_updates": float(len(done)),
        "rejected_segments": float(len(result.trials) - len(done)),
    }
    for i, t in enumerate(done):
        metrics[f"outer_value.{i}"] = float(t.value)
    for k, v in tuned.items():
        arr = np.asarray(v, dtype=np.float64)
        if arr.ndim == 0:
            metrics[f"tuned.{k}"] = float(arr)
        else:
            metrics[f"tuned.{k}.mean"] = float(arr.mean())
    return Evaluation(float(done[-1].value), metrics, extra=tuned)


class HybridOptimizer(OuterOptimizer):
    """Black-box search over the discrete part, ``steps`` hypergradient steps per trial over the
    continuous part (see the module docstring)."""

    def __init__(
        self,
        blackbox: str = "smac",
        blackbox_params: Mapping[str, Any] | None = None,
        *,
        continuous: Sequence[str] | None = None,
        steps: int = 5,
        tensor_hyperparameters: Sequence[str] = (),
        tensor_init: Mapping[str, Any] | None = None,
        warm_start: bool = False,
        mode: str = "reverse",
        outer_lr: float = 0.1,
        outer_optimizer: str = "adam",
        clip: float | None = 10.0,
        inner_steps: int | None = None,
        truncate: int | None = None,
        max_backoffs: int = 8,
        backoff: float = 0.5,
        inner: str = "hypergradient",
        online_params: Mapping[str, Any] | None = None,
    ) -> None:
        from automl_bilevel.plugin.registry import get_registry
        from automl_bilevel_plugins.optimizers.hypergradient import HypergradientOptimizer
        from automl_bilevel_plugins.optimizers.online import OnlineOptimizer

        if not isinstance(blackbox, str):
            raise TypeError(f"blackbox must be the name of a registered optimizer, got {blackbox!r}")
        if blackbox_params is not None and not isinstance(blackbox_params, Mapping):
            raise TypeError(f"blackbox_params must be a dict, got {blackbox_params!r}")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps (hypergradient steps per trial) must be an integer >= 1, got {steps!r}")
        if continuous is not None and (isinstance(continuous, str) or not all(isinstance(c, str) for c in continuous)):
            raise TypeError(f"continuous must be a list of hyperparameter names, got {continuous!r}")
        if isinstance(tensor_hyperparameters, str):
            raise TypeError(f"tensor_hyperparameters must be a list of names, got {tensor_hyperparameters!r}")
        unknown = set(tensor_init or {}) - set(tensor_hyperparameters)
        if unknown:
            raise ValueError(f"tensor_init names {sorted(unknown)}, which are not tensor_hyperparameters")
        validate_params(type(self).__name__, {"warm_start": ["boolean"]}, {"warm_start": warm_start})
        if inner not in INNER:
            raise ValueError(f"hybrid: inner must be one of {INNER}, got {inner!r}")
        if online_params is not None and inner != "online":
            raise ValueError("hybrid: online_params are settings of inner='online'")
        if online_params is not None and not isinstance(online_params, Mapping):
            raise TypeError(f"hybrid: online_params must be a dict, got {online_params!r}")
        reserved = set(online_params or {}) & _SHARED_WITH_ONLINE
        if reserved:
            raise ValueError(f"hybrid: set {sorted(reserved)} as hybrid's own parameters, not in online_params")
        if inner == "online":  # its settings are checked by the optimizer that will run them
            OnlineOptimizer(
                **dict(online_params or {}),
                outer_lr=outer_lr,
                outer_optimizer=outer_optimizer,
                clip=clip,
                max_backoffs=max_backoffs,
                backoff=backoff,
            )
        # the gradient part's settings are checked by the optimizer that will run them (its table)
        HypergradientOptimizer(
            inner_steps=inner_steps,
            mode=mode,
            outer_lr=outer_lr,
            outer_optimizer=outer_optimizer,
            clip=clip,
            truncate=truncate,
            max_backoffs=max_backoffs,
            backoff=backoff,
        )
        registry = get_registry()
        made = registry.make("optimizer", blackbox, dict(blackbox_params or {}))
        if made.declared("trials_are_steps") or blackbox == "hybrid":
            raise ValueError(f"blackbox must be a black-box optimizer (one configuration per trial), not {blackbox!r}")
        self.blackbox, self.blackbox_params = blackbox, dict(blackbox_params or {})
        self.bb = made.obj
        #: what the host checks next to the registered spec: what the black-box part needs (a multi-fidelity
        #: facade needs a multi-fidelity learner)
        extra = self.bb.requires if isinstance(self.bb, DeclaresRequirements) else None
        self.requires = made.declared("requires") | frozenset(extra or ())
        self.continuous = None if continuous is None else list(continuous)
        self.steps, self.warm_start = int(steps), bool(warm_start)
        self.tensor_init = {k: np.asarray(v, dtype=np.float64) for k, v in (tensor_init or {}).items()}
        self.settings: dict[str, Any] = dict(
            mode=mode,
            outer_lr=float(outer_lr),
            outer_optimizer=outer_optimizer,
            clip=clip,
            inner_steps=None if inner_steps is None else int(inner_steps),
            truncate=truncate,
            tensor_hyperparameters=tuple(tensor_hyperparameters),
            max_backoffs=int(max_backoffs),
            backoff=float(backoff),
            inner=inner,
            online_params=dict(online_params or {}),
        )

    # -- set-up ---------------------------------------------------------------------------------------
    def setup(self, problem: BilevelProblem, seed: int) -> None:
        """Check the learner (differentiable; one split with ``inner="online"``), split the space into its continuous
        and black-box parts and set up the black-box optimizer on the latter. Raises TypeError or ValueError when a part
        is empty or a tensor hyperparameter is not one the learner differentiates."""
        super().setup(problem, seed)
        learner = problem.learner
        if not isinstance(learner, DifferentiableLearner):
            raise TypeError(
                f"hybrid needs a differentiable learner; {type(learner).__name__} does not implement "
                "the DifferentiableLearner protocol"
            )
        if self.settings["inner"] == "online" and len(problem.splits) != 1:
            raise ValueError(
                f"hybrid with inner='online' trains one run per trial on one training set; the problem has "
                f"{len(problem.splits)} splits (cv): use a validation split (cv=None)"
            )
        diff = dict(learner.differentiable_hyperparameters(problem.task))
        self.space = as_configspace(problem.space, seed=seed)
        for name in self.settings["tensor_hyperparameters"]:
            if name not in diff or diff[name] in _SCALAR_KINDS:
                tensors = sorted(k for k, v in diff.items() if v not in _SCALAR_KINDS)
                raise ValueError(
                    f"hybrid: {name!r} is not a tensor hyperparameter the learner differentiates (it has: {tensors})"
                )
        self.names, bb_space = split_space(self.space, diff, self.continuous)
        if not self.names and not self.settings["tensor_hyperparameters"]:
            raise ValueError(
                "hybrid: nothing to tune by hypergradients (no float of the space the learner "
                f"differentiates: {sorted(diff)}, and no tensor_hyperparameters); use the "
                f"{self.blackbox!r} optimizer directly"
            )
        if not len(bb_space):
            raise ValueError(
                f"hybrid: nothing left for the black-box optimizer (every hyperparameter, "
                f"{sorted(self.names)}, is tuned by hypergradients); use the 'hypergradient' optimizer"
            )
        bb_space.seed(seed)
        self.bb_space = bb_space
        self.bb.n_iter = self.n_iter
        self.bb.setup(replace(problem, space=bb_space), seed)
        self._tokens = itertools.count()
        self._pending: dict[int, Proposal] = {}
        self.trials: list[Trial] = []  # this optimizer's record of every told trial
        self.tuned: dict[int, dict[str, Any]] = {}  # trial number -> tuned values

    # -- ask / evaluate / tell ------------------------------------------------------------------------
    def _start(self, active: Sequence[str]) -> dict[str, Any]:
        """Starting values: the space's defaults (and tensor_init), or the best trial's tuned values."""
        start: dict[str, Any] = {k: float(self.space[k].default_value) for k in active}
        start.update({k: v for k, v in self.tensor_init.items()})
        best = best_trial(self.trials) if self.warm_start else None
        if best is not None:
            for k, v in self.tuned.get(best.number, {}).items():
                hp = self.space[k] if k in start and k in self.space else None
                if isinstance(hp, FloatHyperparameter):  # a scalar: clipped into its range (the journal checks it)
                    start[k] = min(max(float(v), float(hp.lower)), float(hp.upper))
                elif k in self.settings["tensor_hyperparameters"]:
                    start[k] = v
        return start

    def ask(self, n: int = 1) -> list[Proposal]:
        """One proposal per black-box proposal: its black-box values plus the starting values of the active continuous
        hyperparameters; ``info`` is a :class:`HybridPoint` (its steps scaled by the proposal's budget)."""
        out: list[Proposal] = []
        for inner in self.bb.ask(n):
            bb_config = config_dict(inner.config)
            defaults = {k: self.space[k].default_value for k in self.names}
            active = [k for k in _active(self.space, {**bb_config, **defaults}) if k in self.names]
            start = self._start(active)
            steps = self.steps if inner.budget is None else max(1, round(self.steps * float(inner.budget)))
            token = next(self._tokens)
            self._pending[token] = inner
            config = {**bb_config, **{k: start[k] for k in active}}
            out.append(Proposal(config, budget=inner.budget, info=HybridPoint(token, bb_config, start, steps)))
        return out

    def evaluate(self, problem: BilevelProblem, proposal: Proposal) -> Evaluation:
        """Run the trial's inner search (:func:`evaluate_hybrid`): hypergradient steps, or one online run, from the
        proposal's starting values."""
        return evaluate_hybrid(problem, proposal, self.settings)

    def remote_evaluator(self) -> Callable[[BilevelProblem, Proposal], Evaluation]:
        """:func:`evaluate_hybrid` with this optimizer's settings, picklable for Dask workers."""
        return functools.partial(evaluate_hybrid, settings=dict(self.settings))  # picklable, for Dask workers

    def _bb_trial(self, trial: Trial) -> Trial:
        """The trial as the black-box optimizer sees it: its own hyperparameters only."""
        return replace(trial, config={k: v for k, v in trial.config.items() if k in self.bb_space}, extra=None)

    def tell(self, proposal: Proposal, trial: Trial) -> None:
        """Keep the trial's tuned values (``trial.extra``) and tell the black-box optimizer the trial over its own
        hyperparameters. Raises TypeError when the proposal carries no :class:`HybridPoint`."""
        point = proposal.info
        if not isinstance(point, HybridPoint):
            raise TypeError(f"a hybrid proposal carries a HybridPoint, got {type(point).__name__}")
        inner = self._pending.pop(point.token)
        if trial.ok and isinstance(trial.extra, Mapping):
            self.tuned[trial.number] = dict(trial.extra)
        self.trials.append(replace(trial, extra=None))
        self.bb.tell(inner, self._bb_trial(trial))

    def replay(self, trials: list[Trial]) -> None:
        """Trials of an interrupted run: told to the black-box part; tuned scalars from their metrics."""
        self._replay(
            trials,
            {
                t.number: {
                    k[len("tuned.") :]: float(v)
                    for k, v in t.metrics.items()
                    if k.startswith("tuned.") and not k.endswith(".mean")
                }
                for t in trials
                if t.ok
            },
        )

    def _replay(self, trials: Sequence[Trial], tuned: Mapping[int, Mapping[str, Any]]) -> None:
        self.bb.replay([self._bb_trial(t) for t in trials])
        self.trials = [replace(t, extra=None) for t in trials]
        self.tuned = {int(k): dict(v) for k, v in tuned.items()}

    def should_stop(self) -> bool:
        """Whether the black-box optimizer has nothing more to propose."""
        return self.bb.should_stop()

    # -- results --------------------------------------------------------------------------------------
    def best_config(self) -> dict[str, Any] | None:
        """The best trial's black-box values with its tuned continuous values (what the refit uses)."""
        best = best_trial(self.trials)
        if best is None:
            return None
        return {**{k: v for k, v in best.config.items() if k in self.bb_space}, **self.tuned.get(best.number, {})}

    # -- checkpoint -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The told trials (for the black-box part's replay) and every trial's tuned values, tensors
        included: the journal's metrics hold only their means. Plain data (numpy arrays as tensors)."""
        return numpy_to_plain(
            {
                "trials": [
                    dict(
                        number=t.number,
                        config=dict(t.config),
                        value=t.value,
                        status=t.status,
                        duration=t.duration,
                        budget=t.budget,
                        metrics=dict(t.metrics),
                        error=t.error,
                    )
                    for t in self.trials
                ],
                "tuned": {k: dict(v) for k, v in self.tuned.items()},
            }
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned: its trials are replayed to the black-box part, its tuned values
        kept."""
        state = plain_to_numpy(dict(state))
        trials = [Trial(**rec) for rec in state["trials"]]
        self._replay(trials, state["tuned"])


@hookimpl
def bilevel_register_optimizers() -> list[OptimizerSpec]:
    """Register the ``hybrid`` optimizer (requires ``differentiable``; capability ``parallel``)."""
    return [
        OptimizerSpec(
            "hybrid",
            HybridOptimizer,
            "black-box search (smac by default) over the discrete hyperparameters, hypergradient "
            "steps over the continuous ones inside each trial",
            requires=frozenset({"differentiable"}),
            capabilities=frozenset({"parallel"}),
        )
    ]
