"""The three component ABCs every plugin implements: inner learner, outer objective, outer optimizer.

Call order for an outer optimizer (documented once, here)::

    optimizer.setup(problem, seed)          # once, before the first ask
    repeat until the budget is spent or optimizer.should_stop():
        proposals = optimizer.ask(n)        # n >= 1; fewer may be returned
        for each proposal (maybe on a Dask worker):
            evaluation = optimizer.evaluate(problem, proposal)   # may raise: the trial fails
        optimizer.tell(proposal, trial)     # trial.ok is False for a failed evaluation

``evaluate`` runs where the work runs; ``ask``/``tell`` always run in the driving process. With
several workers, ``ask`` is called again while earlier proposals are still being evaluated; an
optimizer that must wait for them (the end of an ES generation, the next outer step of a gradient
method) returns an empty list. ``evaluate`` is stateless: everything it needs travels in the proposal
(a gradient method's proposal carries the outer variables and the step), and everything ``tell``
needs comes back in the evaluation (``Evaluation.extra``, e.g. the hypergradient; ``trial.extra`` in
``tell``), so it can run on a Dask worker.

A resumed run calls, after ``setup``, ``optimizer.load_state_dict(state)`` when the optimizer saved
its outer state with the checkpoint (gradient methods: outer variables, optimizer state, step), else
``optimizer.replay(trials)`` with the trials of the checkpoint.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeGuard, TypeVar, runtime_checkable

import numpy as np
from ConfigSpace import ConfigurationSpace

from automl_bilevel.core.trials import Evaluation, Trial

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from automl_bilevel.core.problem import Problem, Split


@dataclass(frozen=True)
class Task:
    """What the learner is asked to learn: task kind and shapes (labels are encoded 0..K-1).

    ``input_shape`` is the shape of one example, ``(C, H, W)`` for images, ``(T, F)`` for sequences;
    empty (the default) means a flat vector of ``n_features``. ``n_features`` is always the number of
    input elements per example (the product of ``input_shape``).
    """

    kind: str
    n_features: int
    n_outputs: int
    input_shape: tuple[int, ...] = ()

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The shape of one example: ``input_shape``, or ``(n_features,)`` for flat input."""
        return tuple(self.input_shape) if self.input_shape else (self.n_features,)

    @property
    def is_classifier(self) -> bool:
        """Whether the task is a classification (labels 0..``n_outputs``-1) rather than a regression."""
        return self.kind == "classification"


@runtime_checkable
class FittedModel(Protocol):
    """What ``InnerLearner.fit`` returns. Classifiers predict encoded labels 0..K-1 and
    ``predict_proba`` has exactly ``task.n_outputs`` columns."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for the rows of ``X`` (encoded labels 0..K-1 for a classifier)."""


class ProbabilisticModel(FittedModel, Protocol):
    """A fitted classifier with class probabilities: ``predict_proba`` has ``task.n_outputs`` columns
    summing to 1 (what ``val_loss`` scores). Test with :func:`has_predict_proba`."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities for the rows of ``X``: ``task.n_outputs`` columns summing to 1."""


def has_predict_proba(model: object) -> TypeGuard[ProbabilisticModel]:
    """Whether ``model`` has a callable ``predict_proba``. Not ``isinstance`` against a runtime-checkable
    protocol: scikit-learn hides ``predict_proba`` behind a descriptor that raises ``AttributeError``
    when the model has none (``SVC(probability=False)``), and such an isinstance check still sees it."""
    return callable(getattr(model, "predict_proba", None))


class InnerLearner(ABC):
    """A model plus its training loss L_λ and inner optimizer Φ.

    Constructor arguments are fixed settings; ``config`` holds the hyperparameters being searched.
    A config key may also override a constructor setting of the same name.
    """

    def config_space(self, task: Task) -> ConfigurationSpace:
        """The default search space of this learner for ``task`` (may be empty)."""
        return ConfigurationSpace()

    def param_names(self, task: Task) -> set[str] | None:
        """Names a config may hold, or ``None`` when anything goes (checked before a run)."""
        return set(self.config_space(task).keys())

    def vector_hyperparameters(self, task: Task) -> Mapping[str, np.ndarray]:
        """Vector-valued hyperparameters (a network's weights as one flat vector), with their
        initial values, that vector optimizers (``es``) may search next to the ConfigSpace. A
        config then holds a 1-d float array under each name."""
        return {}

    @abstractmethod
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        config: Mapping[str, Any],
        *,
        task: Task,
        seed: int,
        budget: float | None = None,
    ) -> FittedModel:
        """Train on (X, y) with the hyperparameters in ``config``; ``budget`` in (0, 1] scales
        the training effort for multi-fidelity optimizers."""

    def missing_predict_proba(self, task: Task) -> str | None:
        """Why the models this learner fits for ``task`` have no ``predict_proba``, with what to use
        instead, or ``None`` when they have one (or the learner cannot tell before fitting). An
        objective that needs probabilities (``val_loss``) is then refused before any trial."""
        return None

    def learned_components(self, config: Mapping[str, Any]) -> Mapping[str, LearnedComponent] | None:
        """What the refit with ``config`` learned that is worth storing with the run besides the model
        (a loss network, a learned optimizer), by name, as :class:`LearnedComponent` objects.
        ``None`` (the default): nothing."""
        return None


class OuterObjective(ABC):
    """An outer objective E, always minimised."""

    #: the objective scores ``model.predict_proba`` for classification (``val_loss`` does); a learner
    #: whose ``missing_predict_proba`` gives a reason is refused before any trial
    needs_predict_proba: bool = False

    @abstractmethod
    def __call__(self, model: FittedModel, X: np.ndarray, y: np.ndarray, *, task: Task) -> float:
        """The objective of a fitted model on held-out data (lower is better)."""


@runtime_checkable
@runtime_checkable
class PerLayerLearner(Protocol):
    """A learner whose model has named parameter tensors (layers): what ``lr_per_layer`` and
    ``weight_decay_per_layer`` give one value each."""

    def layer_names(self, task: Task, config: Mapping[str, Any] | None = None) -> list[str]:
        """The names of the model's parameter tensors, in the order of its flat weight vector."""
        ...


class DifferentiableInnerProblem(Protocol):
    """One inner problem written functionally (what ``DifferentiableLearner.differentiable`` returns):
    ``dynamics`` (an :class:`automl_bilevel.gradient.InnerDynamics`), its initial state ``z0``, the
    fixed hyperparameter tensors ``constants``, ``outputs(w, X)`` (the model's forward pass on flat
    weights ``w``), and ``tensor``/``targets`` to turn validation data into tensors."""

    dynamics: Any
    z0: torch.Tensor
    constants: Mapping[str, torch.Tensor]

    def outputs(self, w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """The model's forward pass: its raw outputs (logits for a classifier) on ``X`` with flat weights ``w``."""

    def tensor(self, X: np.ndarray) -> torch.Tensor:
        """Features ``X`` as the tensor :meth:`outputs` takes (dtype and device of the inner problem)."""

    def targets(self, y: np.ndarray) -> torch.Tensor:
        """Targets ``y`` as the tensor the objective's ``loss_tensor`` takes."""


@runtime_checkable
class DifferentiableLearner(Protocol):
    """The contract of a learner with the ``differentiable`` capability: its inner training as a
    :class:`DifferentiableInnerProblem`, and which hyperparameters a gradient method may move
    (name -> kind: ``positive``, ``unit``, ``positive_per_feature``, ``unit_per_example``, ``vector``)."""

    def differentiable(
        self,
        X: np.ndarray,
        y: np.ndarray,
        config: Mapping[str, Any],
        *,
        task: Task,
        seed: int,
        budget: float | None = None,
        steps: int | None = None,
    ) -> DifferentiableInnerProblem:
        """The inner training on (``X``, ``y``) written functionally, as a :class:`DifferentiableInnerProblem`.

        Arguments as for ``InnerLearner.fit``: ``config`` fixes the hyperparameters a gradient method does
        not move, ``task`` gives the shapes, ``seed`` the random draws (initial weights), ``budget`` scales
        the training effort; ``steps`` overrides the number of inner steps T."""

    def differentiable_hyperparameters(self, task: Task) -> Mapping[str, str]:
        """The hyperparameters a gradient method may move, name -> kind: ``positive`` (a log-scale
        float), ``unit`` (a float in (0, 1)), ``positive_per_feature``, ``unit_per_example`` or ``vector``."""


@runtime_checkable
class DifferentiableObjective(Protocol):
    """The contract of an objective with the ``differentiable`` capability: the same objective on the
    model's raw outputs, as a differentiable scalar tensor."""

    def loss_tensor(self, outputs: torch.Tensor, y: torch.Tensor, *, task: Task) -> torch.Tensor:
        """The objective of the model's raw ``outputs`` against targets ``y`` as a scalar tensor that
        gradients flow through (lower is better), consistent with the objective's ``__call__``."""


@runtime_checkable
class PopulationLearner(Protocol):
    """A learner that evaluates a whole population of one vector hyperparameter (e.g. loss networks)
    as one batched run: row ``i`` of the result is what fitting with row ``i`` of ``vectors`` and
    scoring with ``objective`` gives, averaged over ``splits``. The ``es`` optimizer uses it to
    evaluate a generation at once."""

    def evaluate_population(
        self,
        splits: Sequence[Split],
        vectors: np.ndarray,
        objective: OuterObjective,
        *,
        task: Task,
        seed: int,
        name: str = ...,
        config: Mapping[str, Any] | None = ...,
        budget: float | None = ...,
    ) -> np.ndarray:
        """The objective of each row of ``vectors`` (one value of the vector hyperparameter ``name`` per
        row), fitted on each split's training data and scored by ``objective`` on its validation data, averaged
        over ``splits``: an array with one value per row. ``config`` holds the other hyperparameters,
        ``budget`` scales the training effort."""


#: The protocol a component with the ``differentiable`` capability must satisfy, by kind.
DIFFERENTIABLE_PROTOCOLS: dict[str, type] = {"learner": DifferentiableLearner, "objective": DifferentiableObjective}


@runtime_checkable
class DeclaresRequirements(Protocol):
    """An optimizer instance whose settings add capabilities it needs beyond its registration's
    ``requires`` (a facade such as the hybrid optimizer, or SMAC with a budget schedule needing
    ``multi_fidelity``): an attribute or property ``requires``, checked before a run."""

    @property
    def requires(self) -> frozenset[str] | None:
        """The capabilities this instance needs in addition to its registration's, or ``None`` for none."""


@runtime_checkable
class LearnedComponent(Protocol):
    """A learned piece of a model stored with a run (a loss network, a learned optimizer): it writes
    itself to one file and says with which settings it was built (``settings()``, JSON-able values)."""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the component to the file ``path``."""

    def settings(self) -> Mapping[str, Any]:
        """The settings it was built with, as JSON-able values (enough to rebuild it before loading)."""


@dataclass(frozen=True)
class Proposal:
    """A configuration an optimizer wants evaluated. ``info`` is the optimizer's own bookkeeping."""

    config: Mapping[str, Any]
    budget: float | None = None
    info: Any = field(default=None, compare=False)


#: the kind of problem an outer optimizer works on (a :class:`~automl_bilevel.core.problem.Problem`)
ProblemT = TypeVar("ProblemT", bound="Problem")


class OuterOptimizer(ABC, Generic[ProblemT]):
    """How the outer variables move. See the module docstring for the call order.

    Generic in the kind of :class:`~automl_bilevel.core.problem.Problem` it works on: black-box
    optimizers take a ``SearchProblem`` (a ``BilevelProblem``), gradient ones a ``GradientProblem``.

    The search loop sets ``n_iter`` (its trial budget) on the optimizer before ``setup``.
    """

    n_iter: int | None = None

    def setup(self, problem: ProblemT, seed: int) -> None:
        """Once, before the first ``ask``: the problem to optimize and the run's seed."""
        self.problem = problem
        self.seed = seed

    @abstractmethod
    def ask(self, n: int = 1) -> list[Proposal]:
        """Up to ``n`` proposals to evaluate next."""

    def evaluate(self, problem: ProblemT, proposal: Proposal) -> Evaluation:
        """Evaluate one proposal. The default asks the problem (a
        :class:`~automl_bilevel.core.problem.SearchProblem`: fit the learner, score the objective)."""
        from automl_bilevel.core.problem import SearchProblem

        if not isinstance(problem, SearchProblem):
            raise TypeError(
                f"{type(self).__name__} evaluates configurations of a SearchProblem "
                f"(space, evaluate(config, budget)); got {type(problem).__name__}"
            )
        return problem.evaluate(proposal.config, budget=proposal.budget)

    @abstractmethod
    def tell(self, proposal: Proposal, trial: Trial) -> None:
        """Learn from a finished trial (``trial.ok`` is False when it failed)."""

    def replay(self, trials: list[Trial]) -> None:
        """Learn from trials of an earlier, interrupted run of the same search (a checkpoint),
        before the first ``ask``. The default tells each one as if it had been asked."""
        for trial in trials:
            self.tell(Proposal(trial.config, trial.budget), trial)

    def remote_evaluator(self) -> Callable[[ProblemT, Proposal], Evaluation] | None:
        """A picklable function that evaluates a proposal on another process (Dask worker), for
        optimizers that override ``evaluate``. ``None``: the default evaluation (fit and score)."""
        return None

    def should_stop(self) -> bool:
        """Whether the optimizer has nothing more to propose (the loop stops early); default ``False``."""
        return False

    def state_dict(self) -> dict[str, Any] | None:
        """The optimizer's outer state after its last ``tell`` (gradient methods: outer variables,
        optimizer moments, step, RNG), saved with a checkpoint so a resumed run continues exactly.
        ``None`` (the default): nothing to save; a resumed run replays the trials instead."""
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after ``setup``, before the first ``ask``)."""
        raise NotImplementedError(f"{type(self).__name__} saves no outer state")

    def best_config(self) -> Mapping[str, Any] | None:
        """The configuration to refit with, when it is not simply the best trial's (gradient
        methods return their final outer variables). ``None`` means: use the best trial."""
        return None

    def refit(
        self,
        learner: InnerLearner,
        X: np.ndarray,
        y: np.ndarray,
        config: Mapping[str, Any],
        *,
        task: Task,
        seed: int,
    ) -> FittedModel | None:
        """The final model on all of (X, y), when the search's result is more than a configuration (the
        ``online`` optimizer replays its schedule of hyperparameters). ``None`` (the default): the
        estimator calls ``learner.fit(X, y, config)``."""
        return None

    def fitted_attributes(self) -> Mapping[str, Any]:
        """Extra fitted attributes for the estimator, by name (each ending in ``_``), e.g. the
        ``online`` optimizer's ``schedule_``. Called after the search; default: none."""
        return {}
