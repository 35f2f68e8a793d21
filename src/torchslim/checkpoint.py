"""torchslim's checkpoint: one ``.safetensors`` file plus a ``.json`` sidecar, no pickle.

The safetensors header carries the full metadata JSON (key ``torchslim``), so the single file is
self-describing and is replaced atomically; the sidecar is the same JSON for people and tools.

Rebuilding without pickling the model object:

* ``architecture`` names a registered model and its config; :func:`create_model` builds it.
* ``structure`` lists the modules whose type or shape differs from that fresh build (pruned
  convolutions, quantized linears...). Each module type that can appear there has a *codec*:
  ``to_config(module) -> dict`` and ``from_config(dict) -> module``; the module is swapped in
  before ``load_state_dict``. Compression methods register codecs for their own module types.
  A module kind torchslim has no codec for may still have its own tensors resized (a ConvNeXt
  layer-scale ``gamma``): a ``tensor_shapes`` entry records them, provided none of the module's
  plain attributes changed (those would be constructor arguments the checkpoint cannot know).
  Modules whose state is not plain tensors (``torch.ao`` packed weights) save their own tensors
  through the codec's ``get_state`` / ``set_state``.
* ``model_codecs`` records model-wide state that is not a tensor (the cast hooks of an FP16 model).
* ``encodings`` lists tensors stored compactly (e.g. a sparse tensor as bitmask + non-zeros);
  :func:`encode_tensor`/:func:`decode_tensor` turn them back into dense tensors on load.
* ``torch.nn.utils.prune`` masks are folded (``weight = weight_orig * weight_mask``): the file
  holds the plain dense model with its zeros, which the bitmask encoding stores compactly.
"""

from __future__ import annotations

import copy
import json
import math
import platform
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch.nn.utils import prune as torch_prune

from torchslim._version import __version__
from torchslim.errors import CheckpointError
from torchslim.io import atomic_path, write_json
from torchslim.methods import CODEC_HOMES, load_codec_home
from torchslim.surgery import avoid_fused_paths

FORMAT = "torchslim-checkpoint"
FORMAT_VERSION = 1


class _StructureEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    kind: str
    config: dict[str, Any] = Field(default_factory=dict)
    shapes: dict[str, list[NonNegativeInt]] = Field(default_factory=dict)
    attrs: dict[str, Any] = Field(default_factory=dict)


class _Encoding(BaseModel):
    kind: str
    shape: list[NonNegativeInt]
    dtype: str = "float32"


class _Architecture(BaseModel):
    name: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)


class _Header(BaseModel):
    """The schema of the JSON header: checked before any of it is used."""

    model_config = ConfigDict(extra="allow")
    format: str
    format_version: int = Field(ge=1)
    architecture: _Architecture = Field(default_factory=_Architecture)
    structure: list[_StructureEntry] = Field(default_factory=list)
    model_codecs: dict[str, Any] = Field(default_factory=dict)
    encodings: dict[str, _Encoding] = Field(default_factory=dict)


def _parse_header(text: Any, path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: brackets nested 100,000 deep
        raise CheckpointError(f"{path}: its torchslim metadata is not JSON ({exc}); the file is corrupt") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torchslim checkpoint (its metadata names no format {FORMAT!r})")
    try:
        header = _Header.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise CheckpointError(f"{path}: its metadata field {where!r} is invalid ({e['msg']}); the file is corrupt or was edited") from None
    if header.format_version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format v{header.format_version}; this torchslim {__version__} reads v{FORMAT_VERSION}: upgrade torchslim")
    return raw  # validated; kept as stored (the loader reads optional fields with defaults)


# ----------------------------------------------------------------------------- module codecs
@dataclass(frozen=True)
class ModuleCodec:
    kind: str
    cls: type[nn.Module]
    to_config: Callable[[nn.Module], dict[str, Any]]
    from_config: Callable[[dict[str, Any]], nn.Module]
    # For modules whose state_dict holds non-tensors (torch.ao packed params): their own tensors.
    get_state: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None
    set_state: Callable[[nn.Module, dict[str, torch.Tensor]], None] | None = None


@dataclass(frozen=True)
class ModelCodec:
    key: str
    describe: Callable[[nn.Module], Any]  # a JSON value, or None when the model does not use it
    restore: Callable[[nn.Module, Any], nn.Module]
    after_load: Callable[[nn.Module, Any], None] | None = None  # runs once the weights are in


_CODECS_BY_KIND: dict[str, ModuleCodec] = {}
_CODECS_BY_CLS: dict[type[nn.Module], ModuleCodec] = {}
_MODEL_CODECS: dict[str, ModelCodec] = {}
_SHAPES = "tensor_shapes"  # structure entries that resize a codec-less module's own tensors


def register_codec(
    kind: str,
    cls: type[nn.Module],
    to_config: Callable[[Any], dict[str, Any]],
    from_config: Callable[[dict[str, Any]], nn.Module],
    *,
    get_state: Callable[[Any], dict[str, torch.Tensor]] | None = None,
    set_state: Callable[[Any, dict[str, torch.Tensor]], None] | None = None,
) -> None:
    """Teach the checkpoint how to rebuild modules of ``cls`` (exact type) from a JSON config.

    ``get_state``/``set_state`` replace the module's ``state_dict`` when that holds non-tensors.
    """
    if kind == _SHAPES:
        raise ValueError(f"codec kind {_SHAPES!r} is reserved")
    codec = ModuleCodec(kind, cls, to_config, from_config, get_state, set_state)
    _CODECS_BY_KIND[kind] = codec
    _CODECS_BY_CLS[cls] = codec


def register_model_codec(
    key: str, describe: Callable[[nn.Module], Any], restore: Callable[[nn.Module, Any], nn.Module],
    *, after_load: Callable[[nn.Module, Any], None] | None = None,
) -> None:  # fmt: skip
    """Save model-wide non-tensor state: ``describe(model)`` is JSON (or None when unused) and
    ``restore(model, value)`` returns the model with that state back; ``after_load(model, value)``
    adapts the loaded weights (to this CPU, say)."""
    _MODEL_CODECS[key] = ModelCodec(key, describe, restore, after_load)


def _conv_cfg(m: nn.Conv2d) -> dict[str, Any]:
    return dict(
        in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=list(m.kernel_size),
        stride=list(m.stride), padding=list(m.padding) if not isinstance(m.padding, str) else m.padding,
        dilation=list(m.dilation), groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
    )  # fmt: skip


register_codec("conv2d", nn.Conv2d, _conv_cfg, lambda c: nn.Conv2d(**c))
register_codec(
    "linear", nn.Linear,
    lambda m: dict(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None),
    lambda c: nn.Linear(**c),
)  # fmt: skip
register_codec(
    "batchnorm2d", nn.BatchNorm2d,
    lambda m: dict(num_features=m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                   track_running_stats=m.track_running_stats),
    lambda c: nn.BatchNorm2d(**c),
)  # fmt: skip
register_codec(
    "layernorm", nn.LayerNorm,
    lambda m: dict(normalized_shape=list(m.normalized_shape), eps=m.eps,
                   elementwise_affine=m.elementwise_affine, bias=getattr(m, "bias", None) is not None),
    lambda c: nn.LayerNorm(**c),
)  # fmt: skip


def _module_spec(m: nn.Module) -> dict[str, Any] | None:
    codec = _CODECS_BY_CLS.get(type(m))
    return None if codec is None else {"kind": codec.kind, "config": codec.to_config(m)}


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def _by_module(state: dict[str, torch.Tensor]) -> dict[str, dict[str, list[int]]]:
    """``{module name: {own tensor name: shape}}`` (tensor names never contain dots)."""
    out: dict[str, dict[str, list[int]]] = {}
    for k, v in state.items():
        mod, _, t = k.rpartition(".")
        out.setdefault(mod, {})[t] = list(v.shape)
    return out


def _attrs(m: nn.Module) -> dict[str, Any]:
    # A module's plain public attributes stand in for its constructor arguments (in_features...).
    def plain(v: Any) -> bool:
        return v is None or isinstance(v, bool | int | float | str)

    public = {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"}
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in public.items()
        if plain(v) or (isinstance(v, tuple | list) and all(map(plain, v)))
    }


def _no_codec(name: str, m: nn.Module, why: str) -> CheckpointError:
    return CheckpointError(
        f"layer {name or '<root>'} ({type(m).__name__}) {why}, and torchslim's checkpoint cannot rebuild a "
        f"{type(m).__name__} from its architecture; register a codec for it with "
        "torchslim.checkpoint.register_codec(kind, cls, to_config, from_config), or exclude this layer from the "
        "method (targets={name: None})"
    )


def structure_of(
    model: nn.Module, reference: nn.Module | None, state: dict[str, torch.Tensor] | None = None
) -> list[dict[str, Any]]:
    """The modules of ``model`` whose type or construction differs from ``reference``.

    Without a reference every module with a codec is listed, and every other module's own tensor
    shapes, so a model passed to :func:`load_checkpoint` can be reshaped to fit.
    Raises :class:`CheckpointError` for a change the checkpoint could not rebuild.
    """
    ref = dict(reference.named_modules()) if reference is not None else {}
    shapes = _by_module(state if state is not None else saved_state(model))
    ref_shapes = _by_module(saved_state(reference)) if reference is not None else {}
    out: list[dict[str, Any]] = []
    rebuilt: list[str] = []  # a module rebuilt by its codec brings its children with it
    for name, m in model.named_modules():
        if any(name.startswith(_prefix(p)) for p in rebuilt):
            continue
        r = ref.get(name)
        spec = _module_spec(m) if name else None
        if spec is not None:
            if not (r is not None and type(r) is type(m) and _module_spec(r) == spec):
                out.append({"name": name, **spec})
                rebuilt.append(name)
            continue
        own = shapes.get(name, {})
        if reference is None:
            if own:
                out.append({"name": name, "kind": _SHAPES, "shapes": own, "attrs": _attrs(m)})
            continue
        if r is None:
            if own:
                raise _no_codec(name, m, "is not in the architecture")
            continue
        if type(r) is not type(m):
            raise _no_codec(name, m, f"replaces the architecture's {type(r).__name__}")
        if own == ref_shapes.get(name, {}):
            continue
        changed = sorted(k for k, v in _attrs(m).items() if _attrs(r).get(k, v) != v)
        if changed:
            raise _no_codec(name, m, f"has resized tensors and changed attributes {changed}")
        out.append({"name": name, "kind": _SHAPES, "shapes": own, "attrs": _attrs(m)})
    return out


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _resize(m: nn.Module, spec: dict[str, Any]) -> None:
    """Give ``m``'s own tensors the recorded shapes (values come from the checkpoint next)."""
    tensors = {**m._parameters, **m._buffers}
    diff = {k: s for k, s in spec.get("shapes", {}).items() if (t := tensors.get(k)) is not None and list(t.shape) != s}
    if not diff:
        return
    changed = sorted(k for k, v in spec.get("attrs", {}).items() if _attrs(m).get(k, v) != v)
    if changed:
        raise _no_codec(spec["name"], m, f"was saved with resized tensors {sorted(diff)} and attributes {changed}")
    for k, shape in diff.items():
        old = tensors[k]
        assert old is not None
        new = torch.empty(shape, dtype=old.dtype, device=old.device)
        if k in m._parameters:
            m._parameters[k] = nn.Parameter(new, requires_grad=old.requires_grad)
        else:
            m._buffers[k] = new


def _check_sizes(name: str, shapes: dict[str, list[int]], tensors: dict[str, torch.Tensor] | None) -> None:
    """Before a module is built or resized: the shapes the header claims must be those of the
    tensors the file holds (a 1 MB file whose header claims ``Linear(20000, 20000)`` must not
    allocate 1.6 GB first)."""
    if tensors is None:
        return
    stored = sum(t.numel() for t in tensors.values())
    for k, shape in shapes.items():
        t = tensors.get(f"{name}.{k}" if name else k)
        n = math.prod(shape)
        if (t is not None and list(t.shape) != list(shape)) or (t is None and n > stored):
            got = "absent" if t is None else list(t.shape)
            raise CheckpointError(f"the header gives {name}.{k} the shape {list(shape)} but the file's tensor is {got}; "
                                  "the file is corrupt or was edited")  # fmt: skip


def _claimed_shapes(codec: ModuleCodec, config: Any) -> dict[str, list[int]]:
    """The tensor shapes the module ``codec`` builds from ``config`` would have, built on the meta
    device (no memory); empty when the codec cannot be probed that way."""
    try:
        with torch.device("meta"):
            probe = codec.from_config(config)
        return {k: list(v.shape) for k, v in probe.state_dict().items() if isinstance(v, torch.Tensor)}
    except Exception:  # noqa: BLE001 - a codec that cannot build on meta is checked after loading instead
        return {}


def apply_structure(model: nn.Module, structure: list[dict[str, Any]], tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Rebuild the modules ``structure`` records; with the file's ``tensors``, every claimed shape
    is checked against them before anything is allocated."""
    for spec in structure:
        try:
            target = model.get_submodule(spec["name"])
        except AttributeError as exc:
            raise CheckpointError(f"checkpoint names module {spec['name']!r}, which this architecture lacks") from exc
        if spec["kind"] == _SHAPES:
            _check_sizes(spec["name"], spec.get("shapes", {}), tensors)
            _resize(target, spec)
            continue
        codec = _CODECS_BY_KIND.get(spec["kind"])
        if codec is None:
            _ensure_codecs_loaded(spec["kind"])
            codec = _CODECS_BY_KIND.get(spec["kind"])
        if codec is None:
            raise CheckpointError(
                f"checkpoint needs module kind {spec['kind']!r} for {spec['name']}, which this torchslim "
                f"{__version__} does not know; upgrade torchslim"
            )
        if tensors is not None and codec.set_state is None:
            _check_sizes(spec["name"], _claimed_shapes(codec, spec.get("config", {})), tensors)
        _set_module(model, spec["name"], codec.from_config(spec.get("config", {})))
    # A rebuilt quantized Linear inside a torch Transformer layer has no float weight for its fused path.
    avoid_fused_paths(model, [s["name"] for s in structure if s["kind"] != _SHAPES])


def _ensure_codecs_loaded(kind: str | None = None) -> None:
    """Register the codec for ``kind`` when a checkpoint names one this process does not know yet.

    The checkpoint sits below the method packages and never imports them: codecs are registered by
    the packages themselves (their methods' ``codecs`` in :mod:`torchslim.methods`, or their module
    definitions). A file can name a kind whose package this process has not imported, so
    :data:`torchslim.methods.CODEC_HOMES` maps each kind to its package and exactly that one is
    imported here. Saving needs no lookup: a model's modules come from packages already imported.
    Without ``kind`` (a caller that cannot tell which), every package in the table is imported.
    """
    if kind is not None:
        load_codec_home(kind)
        return
    for k in sorted(set(CODEC_HOMES)):
        load_codec_home(k)


# ----------------------------------------------------------------------------- tensor encodings
def encode_tensor(name: str, t: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Store a mostly-zero tensor as a packed bitmask plus its non-zero values (lossless).

    Dense float costs 32 bits per element; bitmask + values costs ``1 + 32 * density`` bits, so it
    wins as soon as more than ~3% of the elements are zero. The same holds for integer weights
    (INT8: ``1 + 8 * density`` bits, a win below ~85% density): a pruned layer quantized with
    symmetric weights keeps its zeros as integer zeros, so pruning and quantization compound in
    the file as in Deep Compression. Others are stored dense.
    """
    if t.dtype == torch.bool or t.is_complex() or t.numel() < 64:
        return {name: t}, None
    nz = t != 0
    density = float(nz.float().mean())
    if 1 + t.element_size() * 8 * density >= t.element_size() * 8 * 0.97:
        return {name: t}, None
    bits = np.packbits(nz.flatten().numpy().astype(np.uint8))
    return (
        {f"{name}::mask": torch.from_numpy(bits), f"{name}::values": t[nz].contiguous()},
        {"kind": "bitmask", "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")},
    )


def decode_tensor(name: str, tensors: dict[str, torch.Tensor], enc: dict[str, Any]) -> torch.Tensor:
    if enc["kind"] != "bitmask":
        raise CheckpointError(f"unknown tensor encoding {enc['kind']!r} for {name}")
    shape = tuple(enc["shape"])
    n = int(np.prod(shape)) if shape else 1
    mask = tensors[f"{name}::mask"]
    if n > mask.numel() * 8:  # before allocating: the header's shape must fit the stored bitmask
        raise CheckpointError(f"{name}: the header's shape {list(shape)} needs {n} mask bits, the file holds {mask.numel() * 8}")
    bits = np.unpackbits(mask.numpy())[:n].astype(bool)
    values = tensors[f"{name}::values"]
    if int(bits.sum()) != values.numel():
        raise CheckpointError(f"{name}: bitmask has {int(bits.sum())} ones but {values.numel()} values are stored")
    out = torch.zeros(n, dtype=values.dtype)
    out[torch.from_numpy(bits)] = values
    return out.reshape(shape)


# ----------------------------------------------------------------------------- save / load
def versions() -> dict[str, str]:
    import torchvision

    return {
        "torchslim": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }  # fmt: skip


def _masked(model: nn.Module) -> list[tuple[str, str]]:
    """``(module, tensor)`` names under ``torch.nn.utils.prune`` reparametrisation."""
    return [
        (n, h._tensor_name)
        for n, m in model.named_modules()
        for h in m._forward_pre_hooks.values()
        if isinstance(h, torch_prune.BasePruningMethod)
    ]


def _custom(model: nn.Module) -> dict[str, ModuleCodec]:
    """Modules whose codec saves their tensors itself (their state_dict holds non-tensors)."""
    out: dict[str, ModuleCodec] = {}
    for n, m in model.named_modules():
        c = _CODECS_BY_CLS.get(type(m))
        if c is not None and c.get_state is not None and not any(n.startswith(_prefix(p)) for p in out):
            out[n] = c
    return out


def saved_state(model: nn.Module, *, _retry: bool = True) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint of ``model`` holds (not yet copied).

    Pruning masks are folded into their weights (``weight_orig * weight_mask``, what the forward
    uses), so the file has the plain architecture's keys; modules whose ``state_dict`` holds
    non-tensors contribute their codec's ``get_state`` tensors instead.
    """
    custom = _custom(model)
    prefixes = tuple(_prefix(n) for n in custom)
    out: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if prefixes and k.startswith(prefixes):
            continue
        if not isinstance(v, torch.Tensor):
            if _retry:  # only torch.ao's quantized modules hold non-tensors; their codec is torchslim.quantization's
                _ensure_codecs_loaded("seed_dynamic_linear")
                return saved_state(model, _retry=False)
            owner = k.rpartition(".")[0]
            while owner.rpartition(".")[2].startswith("_"):  # e.g. torch.ao's private `_packed_params`
                owner = owner.rpartition(".")[0]
            why = f"holds {k!r}, a {type(v).__name__} rather than a tensor"
            raise _no_codec(owner, model.get_submodule(owner), why)
        out[k] = v
    for n, c in custom.items():
        assert c.get_state is not None
        out.update({_prefix(n) + k: v for k, v in c.get_state(model.get_submodule(n)).items()})
    for n, t in _masked(model):
        key = _prefix(n) + t
        out[key] = out.pop(key + "_orig") * out.pop(key + "_mask")
    return out


def _strip_masks(model: nn.Module) -> None:
    # The checkpoint holds folded weights; a masked target model takes them as plain weights.
    for n, t in _masked(model):
        torch_prune.remove(model.get_submodule(n), t)


def save_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    architecture: str | None = None,
    architecture_config: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    sidecar_meta: dict[str, Any] | None = None,
    sparse: bool = True,
) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) and its ``.json`` sidecar, atomically.

    ``architecture`` names a registered model so :func:`load_checkpoint` can rebuild it alone.
    ``sidecar_meta`` (e.g. a training history) goes to the ``.json`` only, so it does not
    inflate the file whose size torchslim reports.

    >>> import tempfile, torch
    >>> from torchslim.models import create_model
    >>> d = tempfile.mkdtemp()
    >>> p = save_checkpoint(create_model("lenet300"), d + "/m.safetensors", architecture="lenet300")
    >>> m, meta = load_checkpoint(p)
    >>> meta["architecture"]["name"]
    'lenet300'
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    reference = None
    if architecture is not None:
        from torchslim.models import create_model, get_entry

        if get_entry(architecture).family == "transformer":
            reference = None  # rebuilding would load pretrained weights just to compare shapes
        else:
            reference = create_model(architecture, **(architecture_config or {}))
    state = saved_state(model)
    structure = structure_of(model, reference, state)
    model_codecs = {k: v for k, c in _MODEL_CODECS.items() if (v := c.describe(model)) is not None}
    tensors: dict[str, torch.Tensor] = {}
    encodings: dict[str, Any] = {}
    for k, v in state.items():
        # safetensors refuses shared storage and non-contiguous tensors; copy each one.
        v = v.detach().to("cpu").contiguous().clone()
        stored, enc = encode_tensor(k, v) if sparse else ({k: v}, None)
        tensors.update(stored)
        if enc is not None:
            encodings[k] = enc
    full_meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": {"name": architecture, "config": architecture_config or {}},
        "structure": structure,
        "model_codecs": model_codecs,
        "encodings": encodings,
        "versions": versions(),
        **(meta or {}),
    }
    with atomic_path(path) as tmp:
        tmp.write_bytes(st_save(tensors, metadata={"torchslim": json.dumps(full_meta, default=str)}))
    write_json(path.with_suffix(".json"), {**full_meta, **(sidecar_meta or {})})
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read tensors (decoded to dense) and metadata, checking the file is a torchslim checkpoint."""
    path = Path(path)
    if path.is_dir():
        cands = sorted(path.glob("*.safetensors"))
        if len(cands) != 1:
            raise CheckpointError(f"{path} is a folder with {len(cands)} .safetensors files; name one")
        path = cands[0]
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raw = path.read_bytes()
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
    except (SafetensorError, ValueError, OSError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupt: save or "
                              "copy it again") from exc
    meta_s = header.get("__metadata__", {}).get("torchslim")
    if meta_s is None:
        raise CheckpointError(f"{path} is a safetensors file but not a torchslim checkpoint (no torchslim metadata)")
    meta = _parse_header(meta_s, path)
    for name, enc in meta.get("encodings", {}).items():
        if f"{name}::mask" not in tensors or f"{name}::values" not in tensors:
            raise CheckpointError(f"{path}: {name} is stored sparse but its mask or values tensor is missing; the file is corrupt")
        tensors[name] = decode_tensor(name, tensors, enc)
        tensors.pop(f"{name}::mask", None)
        tensors.pop(f"{name}::values", None)
    return tensors, meta


def check_state_matches(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped tensor."""
    own = saved_state(model)
    missing = [k for k in own if k not in tensors]
    unexpected = sorted(k for k in tensors if k not in own)
    shapes = [
        f"{k} (checkpoint {tuple(tensors[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)
    ]
    # An integer or boolean tensor where the model holds floats would be cast silently by load_state_dict.
    kinds = [
        f"{k} (checkpoint {str(tensors[k].dtype).removeprefix('torch.')}, model {str(own[k].dtype).removeprefix('torch.')})"
        for k in own
        if k in tensors and own[k].is_floating_point() and not tensors[k].is_floating_point()
    ]
    if missing or unexpected or shapes or kinds:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes),
                             ("integer or boolean data for float tensors", kinds)):  # fmt: skip
            if items:
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"{source} does not fit this model ({'; '.join(parts)}); it belongs to another architecture "
                              "or was edited: load it into the model it was saved from")


def _load_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    _strip_masks(model)
    check_state_matches(model, tensors, source)
    custom = _custom(model)
    prefixes = tuple(_prefix(n) for n in custom)
    for n, c in custom.items():
        assert c.set_state is not None
        p = _prefix(n)
        c.set_state(model.get_submodule(n), {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)})
    # Custom modules load their own state_dict back (unchanged); the versions in _metadata tell
    # modules such as torch.ao's that the keys are in today's layout.
    own = model.state_dict()
    plain = OrderedDict((k, v) for k, v in tensors.items() if not (prefixes and k.startswith(prefixes)))
    plain.update((k, v) for k, v in own.items() if prefixes and k.startswith(prefixes))
    plain._metadata = own._metadata  # type: ignore[attr-defined]
    # Keep the stored float dtype (an FP16 model reloads as FP16); ties share one tensor object.
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        s = plain.get(name)
        if s is not None and s.is_floating_point() and t.is_floating_point() and s.dtype != t.dtype:
            t.data = t.data.to(s.dtype)
    model.load_state_dict(plain, strict=True)


def _restore_model_codecs(model: nn.Module, codecs: dict[str, Any], source: str) -> nn.Module:
    for key, value in codecs.items():
        if key not in _MODEL_CODECS:
            _ensure_codecs_loaded(key)
        if key not in _MODEL_CODECS:
            raise CheckpointError(
                f"{source} needs model state {key!r}, which this torchslim {__version__} does not know; upgrade torchslim"
            )
        model = _MODEL_CODECS[key].restore(model, value)
    return model


def load_checkpoint(path: str | Path, *, model: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored at ``path``; returns ``(model, metadata)``.

    With ``model`` given (an architecture torchslim does not register), a deep copy of it receives
    the structure and weights; the argument itself is not modified. Pruning masks on it are dropped:
    the checkpoint holds the folded weights.
    """
    tensors, meta = read_checkpoint(path)
    arch = meta.get("architecture", {})
    if model is not None:
        model = copy.deepcopy(model)
    elif arch.get("name"):
        from torchslim.models import create_model

        try:
            model = create_model(arch["name"], **arch.get("config", {}))
        except (TypeError, ValueError, RuntimeError) as exc:  # a config the model's constructor refuses
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{path}: architecture {arch['name']!r} cannot be built with config {arch.get('config')} "
                                  f"({type(exc).__name__}: {str(exc)[:120]}); the file is corrupt or was edited") from exc  # fmt: skip
    else:
        raise CheckpointError(f"{path} stores a model of an unregistered architecture; pass model= to load it into (CLI: --model pkg.module:factory@{path})")
    _strip_masks(model)
    apply_structure(model, meta.get("structure", []), tensors)
    codecs = meta.get("model_codecs", {})
    model = _restore_model_codecs(model, codecs, str(path))
    _load_state(model, tensors, str(path))
    for key, value in codecs.items():
        if (after := _MODEL_CODECS[key].after_load) is not None:
            after(model, value)
    return model.eval(), meta


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights from a torchslim checkpoint or a plain safetensors file into ``model`` in place.

    Pruning masks on ``model`` are removed first: the file holds the folded weights.
    """
    path = Path(path)
    try:
        tensors, _ = read_checkpoint(path)
    except CheckpointError:
        try:
            tensors = st_load(path.read_bytes())
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupt: save "
                                  "or copy it again") from exc
    _load_state(model, tensors, str(path))
    return model
