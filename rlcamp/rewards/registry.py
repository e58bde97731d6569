"""Which scorer scores a sample: by ``data_source``, or a user's function loaded by path.

Every scorer has verl's signature ``compute_score(data_source, solution_str, ground_truth,
extra_info, **reward_kwargs) -> float | dict`` (a dict carries ``score`` plus extra metrics).

What the built-in scorers run on (the code sandbox, the math verifier's process) is a
``RewardServices`` the run builds from its config and passes in (``get_reward_function``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rlcamp.rewards import code, dapo, gsm8k, math

ScoreFn = Callable[..., "float | dict[str, Any]"]


class RewardError(RuntimeError):
    """A reward function that failed; the message names the sample and its data_source."""


@dataclass
class RewardServices:
    """What built-in scorers run on, made on first use: the code sandbox (``reward_model.sandbox_fusion``: a
    SandboxFusion-compatible URL, or embedded when None) and the math verifier's worker process."""

    sandbox_url: str | None = None
    max_concurrent: int = 8
    memory_limit_mb: int = 1024
    _sandbox: Any = field(default=None, repr=False)
    _verifier: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def sandbox(self):
        with self._lock:
            if self._sandbox is None:
                from rlcamp.sandbox.client import make_sandbox

                self._sandbox = make_sandbox(self.sandbox_url, self.max_concurrent, self.memory_limit_mb)
            return self._sandbox

    def verifier(self) -> "math.MathVerifier":
        with self._lock:
            if self._verifier is None:
                self._verifier = math.MathVerifier()
            return self._verifier


_DEFAULT_SERVICES = RewardServices()  # for a direct call of default_compute_score without services


SCORERS: dict[str, ScoreFn] = {}
_USES_SERVICES: set[str] = set()  # the built-in scorers that take ``services``


def register_scorer(*data_sources: str, uses_services: bool = False):
    """Register ``fn(solution_str, ground_truth, extra_info=None, **kwargs)`` for these data sources
    (``uses_services``: it also takes ``services``, a ``RewardServices``)."""
    def wrap(fn):
        for source in data_sources:
            SCORERS[source] = fn
            (_USES_SERVICES.add if uses_services else _USES_SERVICES.discard)(source)
        return fn
    return wrap


@register_scorer("openai/gsm8k", "gsm8k")
def _score_gsm8k(solution_str, ground_truth, extra_info=None, **kwargs):
    return gsm8k.compute_score(solution_str, ground_truth, **kwargs)


@register_scorer("rlcamp/arith")
def _score_arith(solution_str, ground_truth, extra_info=None, marked_score: float = 0.0, **kwargs):
    """The GSM8K rule, plus ``flexible``: 1 when the reply's last number is right wherever "####" is (the
    model can do the sum even when it has not learned the format), logged, not rewarded; and ``marked_score``
    (``custom_reward_function.reward_kwargs.marked_score``, default 0) for a reply whose last number after its
    last "####" is right where the strict rule gives less ("#### answer: 24", "#### 4 * 6 = 24"): the format
    tried and the number right, one edit from a strict answer. A partial score stays below 1, so ``val/acc``
    stays the strict accuracy. A right number with no "####" earns nothing: credit for it let PPO settle on
    bare sums and never write the format (RESULTS.md, "The harder work order")."""
    if not 0.0 <= marked_score < 1.0:
        raise RewardError(f"reward_kwargs.marked_score={marked_score} must be in [0, 1): a right number without "
                          "the strict format earns less than a right, formatted answer")
    flexible = float(gsm8k.compute_score(solution_str, ground_truth, method="flexible") >= 1.0)
    strict = gsm8k.compute_score(solution_str, ground_truth, **kwargs)
    marked = gsm8k.compute_score(solution_str, ground_truth, method="marked") >= 1.0
    return {"score": max(strict, marked_score if marked else 0.0), "flexible": flexible}


@register_scorer("lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500", "math",
                 "math500", "MATH", uses_services=True)
def _score_math(solution_str, ground_truth, extra_info=None, *, services: RewardServices, **kwargs):
    return math.compute_score(solution_str, ground_truth, verifier=services.verifier(), **kwargs)


@register_scorer("math_dapo")
def _score_dapo(solution_str, ground_truth, extra_info=None, **kwargs):
    return dapo.compute_score(solution_str, ground_truth, **kwargs)


CODE_SOURCES = ("openai/openai_humaneval", "humaneval", "code", "codecontests", "apps", "taco", "rlcamp/code")


@register_scorer(*CODE_SOURCES, uses_services=True)
def _score_code(solution_str, ground_truth, extra_info=None, *, services: RewardServices, **kwargs):
    kwargs.setdefault("memory_limit_mb", services.memory_limit_mb)
    return code.compute_score(solution_str, ground_truth, services.sandbox(), **kwargs)


def default_compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                          *, services: RewardServices | None = None, **reward_kwargs) -> float | dict[str, Any]:
    """The built-in scorers, picked by data_source (code and math on ``services``: the run's, else a shared default)."""
    scorer = SCORERS.get(data_source)
    if scorer is None:
        raise RewardError(
            f"no reward scorer for data_source '{data_source}'; known: {sorted(SCORERS)}. Add one with "
            "custom_reward_function.path=my_reward.py custom_reward_function.name=compute_score (a function "
            "compute_score(data_source, solution_str, ground_truth, extra_info)), or register it in Python with "
            "rlcamp.rewards.register_scorer('<data_source>')")
    if data_source in _USES_SERVICES:
        reward_kwargs["services"] = services or _DEFAULT_SERVICES
    return scorer(solution_str, ground_truth, extra_info, **reward_kwargs)


def rules_where_known(fn: ScoreFn) -> ScoreFn:
    """With a reward model on: rule scores for data sources that have a scorer, 0 for the rest."""
    def rule_part(data_source, solution_str, ground_truth, extra_info=None):
        return fn(data_source, solution_str, ground_truth, extra_info) if data_source in SCORERS else 0.0
    rule_part.__name__ = getattr(fn, "__name__", "compute_score")
    return rule_part


def load_custom_reward_function(path: str, name: str = "compute_score") -> ScoreFn:
    """Import ``name`` from the Python file ``path`` (custom_reward_function.path / .name)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise RewardError(f"custom_reward_function.path={path}: file does not exist")
    spec = importlib.util.spec_from_file_location(f"rlcamp_custom_reward_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise RewardError(f"custom_reward_function.path={path}: importing it failed: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        functions = [n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")]
        raise RewardError(f"custom_reward_function.name={name}: {path} has no function '{name}'; "
                          f"its functions: {functions}")
    return fn


def _synchronous(fn):
    """An ``async def`` reward function (verl's reward loop accepts both) as a plain one."""
    if not inspect.iscoroutinefunction(fn):
        return fn

    def run(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    run.__name__ = getattr(fn, "__name__", "compute_score")
    return run


def get_reward_function(path: str | None, name: str = "compute_score", reward_kwargs: dict | None = None,
                        loop_kwargs: dict | None = None, services: RewardServices | None = None) -> ScoreFn:
    """The scorer a run uses: the user's function when ``path`` is set, else the built-in dispatch on ``services``.

    ``loop_kwargs``: what the reward loop offers a user's function (``reward_router_address``,
    ``reward_model_tokenizer`` for a generative reward model), passed where its signature takes them."""
    fn = load_custom_reward_function(path, name) if path else default_compute_score
    kwargs = dict(reward_kwargs or {})
    if not path and services is not None:
        kwargs["services"] = services
    if path and loop_kwargs:
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs.update({k: v for k, v in loop_kwargs.items() if takes_any or k in params})
    fn = _synchronous(fn)
    if not kwargs:
        return fn

    def with_kwargs(data_source, solution_str, ground_truth, extra_info=None):
        return fn(data_source, solution_str, ground_truth, extra_info, **kwargs)
    with_kwargs.__name__ = getattr(fn, "__name__", "compute_score")
    return with_kwargs


def score_sample(fn: ScoreFn, index: int, data_source: str, solution_str: str, ground_truth: Any,
                 extra_info: dict | None = None) -> dict[str, Any]:
    """Call ``fn`` on one sample; returns a dict with at least ``score``. Errors name the sample."""
    try:
        result = fn(data_source, solution_str, ground_truth, extra_info)
    except RewardError as exc:
        raise RewardError(f"sample {index} (data_source='{data_source}'): {exc}") from exc
    except Exception as exc:
        raise RewardError(f"reward function '{getattr(fn, '__name__', fn)}' raised on sample {index} "
                          f"(data_source='{data_source}', ground_truth={ground_truth!r}): "
                          f"{type(exc).__name__}: {exc}") from exc
    if isinstance(result, dict):
        if "score" not in result:
            raise RewardError(f"reward function '{getattr(fn, '__name__', fn)}' returned a dict without 'score' "
                              f"on sample {index} (data_source='{data_source}'): keys {sorted(result)}")
        return dict(result, score=float(result["score"]))
    try:
        return {"score": float(result)}
    except (TypeError, ValueError):
        raise RewardError(f"reward function '{getattr(fn, '__name__', fn)}' returned {result!r} on sample {index} "
                          f"(data_source='{data_source}'); return a float or a dict with 'score'") from None
