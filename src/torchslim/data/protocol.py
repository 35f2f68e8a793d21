"""The one data protocol: every verb that needs data takes any DataLoader or iterable of batches.

A batch may be a tensor, an ``(inputs, targets, ...)`` tuple or list, or a dict (a tokenizer's
output, say). Two optional functions say how to read it, as NNCF's ``Dataset(loader,
transform_fn)`` does:

* ``input_fn(batch)`` returns the model's arguments: a tensor (one positional argument), a tuple
  (positional arguments) or a dict (keyword arguments).
* ``target_fn(batch)`` returns the targets the metric and the loss compare against (or ``None``).

Without them: a tensor is the input and has no target; a tuple's first element is the input and
its second the target; a dict is passed as keyword arguments (without its ``labels`` / ``label``
/ ``target`` / ``y`` key, which is the target) when the model's ``forward`` takes those names,
else as one positional argument.

>>> import torch
>>> from torch.utils.data import DataLoader, TensorDataset
>>> loader = DataLoader(TensorDataset(torch.randn(10, 3), torch.arange(10) % 2), batch_size=4)
>>> data = as_data(loader)
>>> [len(data.target(b)) for b in data]
[4, 4, 2]
>>> data.samples()
10
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from torchslim.errors import ConfigError, DataError

TARGET_KEYS = ("labels", "label", "target", "targets", "y")


@dataclass(frozen=True)
class ModelInput:
    """The arguments of one forward call: ``model(*args, **kwargs)``."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, model: Callable[..., Any]) -> Any:
        return model(*self.args, **self.kwargs)

    def tensors(self) -> list[torch.Tensor]:
        return _tensors((*self.args, *self.kwargs.values()))

    @property
    def batch_size(self) -> int:
        ts = self.tensors()
        return int(ts[0].shape[0]) if ts and ts[0].dim() else 1

    @staticmethod
    def of(example: Any) -> ModelInput:
        """The inverse of :meth:`example`: a tensor, a tuple of arguments or a dict of keyword arguments."""
        if isinstance(example, Mapping):
            return ModelInput((), dict(example))
        if isinstance(example, tuple):
            return ModelInput(example)
        return ModelInput((example,))

    def example(self) -> Any:
        """The form ``measure_latency`` / ``count_macs`` take: a tensor, a tuple or a dict."""
        if self.kwargs and not self.args:
            return dict(self.kwargs)
        if len(self.args) == 1 and not self.kwargs and isinstance(self.args[0], torch.Tensor):
            return self.args[0]
        if self.kwargs:
            raise DataError("inputs with both positional and keyword arguments cannot be timed; use input_fn")
        return tuple(self.args)

    def resized(self, n: int) -> ModelInput:
        """The same inputs with batch size ``n`` (rows repeated cyclically when there are fewer)."""

        def fit(v: Any) -> Any:
            if isinstance(v, Mapping):
                return {k: fit(x) for k, x in v.items()}
            if isinstance(v, (tuple, list)):
                return type(v)(fit(x) for x in v)
            if not isinstance(v, torch.Tensor) or v.dim() == 0:
                return v
            if v.shape[0] >= n:
                return v[:n]
            reps = -(-n // v.shape[0])
            return v.repeat(reps, *([1] * (v.dim() - 1)))[:n]

        return ModelInput(tuple(fit(a) for a in self.args), {k: fit(v) for k, v in self.kwargs.items()})


def _tensors(v: Any) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, Mapping):
        v = list(v.values())
    if isinstance(v, (tuple, list)):
        return [t for x in v for t in _tensors(x)]
    return []


def _forward_params(model: nn.Module) -> tuple[set[str], bool]:
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return set(), True
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return set(sig.parameters), var_kw


def default_input(batch: Any, model: nn.Module | None = None) -> ModelInput:
    """How a batch becomes the model's arguments when no ``input_fn`` is given."""
    if isinstance(batch, torch.Tensor):
        return ModelInput((batch,))
    if isinstance(batch, Mapping):
        kw = {k: v for k, v in batch.items() if k not in TARGET_KEYS}
        if model is not None:
            names, var_kw = _forward_params(model)
            if not var_kw and not set(kw) <= names:
                return ModelInput((dict(batch),))
        return ModelInput((), kw)
    if isinstance(batch, (tuple, list)) and batch:
        return to_model_input(batch[0], model)
    raise DataError(
        f"a batch of type {type(batch).__name__} is not a tensor, an (inputs, targets) tuple or a dict; "
        "pass input_fn=lambda batch: <the model's inputs>"
    )


def to_model_input(value: Any, model: nn.Module | None = None) -> ModelInput:
    """``input_fn``'s result (a tensor, tuple or dict) as :class:`ModelInput`."""
    if isinstance(value, ModelInput):
        return value
    if isinstance(value, torch.Tensor):
        return ModelInput((value,))
    if isinstance(value, Mapping):
        return default_input(value, model)
    if isinstance(value, tuple):
        return ModelInput(value)
    if isinstance(value, list):
        return ModelInput(tuple(value))
    return ModelInput((value,))


def default_target(batch: Any) -> Any:
    """The batch's targets when no ``target_fn`` is given: a tuple's second element, a dict's label key."""
    if isinstance(batch, Mapping):
        return next((batch[k] for k in TARGET_KEYS if k in batch), None)
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    return None


class Data:
    """Batches plus how to read them; see the module docstring.

    ``source`` is a DataLoader, any re-iterable of batches (a list), a one-shot iterator (read
    once and kept in memory), a tensor ``[N, ...]`` (split into ``batch_size`` rows), or an
    ``ImageData`` (its images and labels).
    """

    def __init__(
        self,
        source: Any,
        *,
        input_fn: Callable[[Any], Any] | None = None,
        target_fn: Callable[[Any], Any] | None = None,
        batch_size: int = 64,
        name: str | None = None,
    ) -> None:
        if input_fn is not None and not callable(input_fn):
            raise ConfigError(f"input_fn must be callable, got {type(input_fn).__name__}")
        if target_fn is not None and not callable(target_fn):
            raise ConfigError(f"target_fn must be callable, got {type(target_fn).__name__}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.input_fn, self.target_fn = input_fn, target_fn
        self.name = name or type(source).__name__
        self._source = self._normalize(source, batch_size)
        self._model: nn.Module | None = None

    @staticmethod
    def _normalize(source: Any, batch_size: int) -> Iterable[Any]:
        images = getattr(source, "images", None)
        labels = getattr(source, "labels", None)
        if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):  # ImageData
            return [(images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(labels), batch_size)]
        if isinstance(source, torch.Tensor):
            if source.dim() == 0:
                raise DataError("data is a 0-d tensor; pass samples stacked as [N, ...]")
            return [source[i : i + batch_size] for i in range(0, len(source), batch_size)]
        if isinstance(source, (str, bytes, Mapping)) or source is None:
            raise DataError(
                f"data of type {type(source).__name__} is not a DataLoader or an iterable of batches; "
                "pass a torch.utils.data.DataLoader, a list of batches or a tensor [N, ...]"
            )
        try:
            it = iter(source)
        except TypeError as exc:
            raise DataError(f"data of type {type(source).__name__} is not iterable; pass a DataLoader") from exc
        if it is source:  # a generator: read it once, keep the batches
            return list(it)
        return source

    @property
    def source(self) -> Iterable[Any]:
        return self._source

    def bind(self, model: nn.Module) -> Data:
        """Read dict batches against ``model``'s forward signature."""
        self._model = model
        return self

    def __iter__(self) -> Iterator[Any]:
        return iter(self._source)

    def __len__(self) -> int:
        """Batches per pass (the loader's length, or counted)."""
        try:
            return len(self._source)  # type: ignore[arg-type]
        except TypeError:
            return sum(1 for _ in self._source)

    def inputs(self, batch: Any) -> ModelInput:
        if self.input_fn is None:
            return default_input(batch, self._model)
        return to_model_input(self.input_fn(batch), self._model)

    def target(self, batch: Any) -> Any:
        return self.target_fn(batch) if self.target_fn is not None else default_target(batch)

    def samples(self) -> int:
        """Samples per pass (counted from the batches)."""
        return sum(self.inputs(b).batch_size for b in self)

    def first(self) -> Any:
        for b in self:
            return b
        raise DataError(f"{self.name} has no batches; pass non-empty data")

    def take(self, n: int) -> list[Any]:
        """The first batches holding at least ``n`` samples (for calibration)."""
        out: list[Any] = []
        total = 0
        for b in self:
            out.append(b)
            total += self.inputs(b).batch_size
            if total >= n:
                break
        if not out:
            raise DataError(f"{self.name} has no batches; pass non-empty data")
        return out

    def limited(self, max_batches: int | None) -> Iterable[Any]:
        return self if max_batches is None else itertools.islice(self, max_batches)

    def check(self, model: nn.Module, what: str = "data") -> Any:
        """Run ``model`` on the first batch; a mismatch is a :class:`DataError` that says what the model expects."""
        self.bind(model)
        batch = self.first()
        try:
            inp = self.inputs(batch)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"input_fn failed on the first batch of {what} ({type(exc).__name__}: {exc})") from exc
        for t in inp.tensors():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise DataError(f"the first batch of {what} holds {bad} NaN or infinite values; clean the data")
        was = model.training
        try:
            model.eval()
            with torch.inference_mode():
                return inp(model)
        except Exception as exc:  # the model's own errors come as many types
            raise DataError(
                f"the model cannot take the first batch of {what}: it got {describe(inp)}, and forward"
                f"{_signature(model)} raised {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}; "
                "pass data shaped for this model (CLI: --data), or input_fn=lambda batch: <the model's arguments> "
                "(a tensor, a tuple or a dict) to say how to read a batch"
            ) from exc
        finally:
            model.train(was)


def describe(inp: ModelInput) -> str:
    """``args[0]: float32[8, 3, 32, 32], mask: int64[8, 16]``."""

    def one(v: Any) -> str:
        if isinstance(v, torch.Tensor):
            return f"{str(v.dtype).removeprefix('torch.')}{list(v.shape)}"
        if isinstance(v, Mapping):
            return "dict(" + ", ".join(f"{k}={one(x)}" for k, x in v.items()) + ")"
        return type(v).__name__

    parts = [f"args[{i}]: {one(a)}" for i, a in enumerate(inp.args)] + [f"{k}: {one(v)}" for k, v in inp.kwargs.items()]
    return ", ".join(parts) or "no arguments"


def _signature(model: nn.Module) -> str:
    try:
        return str(inspect.signature(model.forward))
    except (TypeError, ValueError):
        return "(...)"


def as_data(
    data: Any,
    *,
    input_fn: Callable[[Any], Any] | None = None,
    target_fn: Callable[[Any], Any] | None = None,
    batch_size: int = 64,
) -> Data:
    """``data`` as :class:`Data`; a :class:`Data` is returned as is unless functions are given."""
    if isinstance(data, Data):
        if input_fn is None and target_fn is None:
            return data
        return Data(data.source, input_fn=input_fn or data.input_fn, target_fn=target_fn or data.target_fn, name=data.name)
    return Data(data, input_fn=input_fn, target_fn=target_fn, batch_size=batch_size)


def first_input(data: Any) -> ModelInput:
    """The model's arguments for the first batch of any data (an ``ImageData`` included)."""
    d = as_data(data)
    return d.inputs(d.first())


def output_tensor(out: Any) -> torch.Tensor:
    """The tensor a metric or a loss reads from a model's output: itself, ``.logits``, or the first element."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "last_hidden_state"):
        v = out.get(key) if isinstance(out, Mapping) else getattr(out, key, None)
        if isinstance(v, torch.Tensor):
            return v
    if isinstance(out, Sequence) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise DataError(f"the model returned {type(out).__name__}; pass a metric or loss_fn that reads it")
