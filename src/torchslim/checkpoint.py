"""torchslim's checkpoint: one ``.safetensors`` file plus a ``.json`` sidecar, no pickle.

The safetensors header carries the full metadata JSON (key ``torchslim``), so the single file is
self-describing and is replaced atomically; the sidecar is the same JSON for people and tools.

Rebuilding without pickling the model object:

* ``architecture`` names a registered model and its config; :func:`create_model` builds it.
* ``structure`` lists the modules whose type or shape differs from that fresh build (pruned
  convolutions, quantized linears...). Each module type that can appear there has a *codec*:
  ``to_config(module) -> dict`` and ``from_config(dict) -> module``; the module is swapped in
  before ``load_state_dict``. Compression methods register codecs for their own module types.
* ``encodings`` lists tensors stored compactly (e.g. a sparse tensor as bitmask + non-zeros);
  :func:`encode_tensor`/:func:`decode_tensor` turn them back into dense tensors on load.
"""

from __future__ import annotations

import copy
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from torchslim._version import __version__
from torchslim.errors import CheckpointError
from torchslim.io import atomic_path, write_json

FORMAT = "torchslim-checkpoint"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- module codecs
@dataclass(frozen=True)
class ModuleCodec:
    kind: str
    cls: type[nn.Module]
    to_config: Callable[[nn.Module], dict[str, Any]]
    from_config: Callable[[dict[str, Any]], nn.Module]


_CODECS_BY_KIND: dict[str, ModuleCodec] = {}
_CODECS_BY_CLS: dict[type[nn.Module], ModuleCodec] = {}


def register_codec(
    kind: str,
    cls: type[nn.Module],
    to_config: Callable[[Any], dict[str, Any]],
    from_config: Callable[[dict[str, Any]], nn.Module],
) -> None:
    """Teach the checkpoint how to rebuild modules of ``cls`` (exact type) from a JSON config."""
    codec = ModuleCodec(kind, cls, to_config, from_config)
    _CODECS_BY_KIND[kind] = codec
    _CODECS_BY_CLS[cls] = codec


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


def structure_of(model: nn.Module, reference: nn.Module | None) -> list[dict[str, Any]]:
    """The modules of ``model`` whose type or construction differs from ``reference``."""
    ref = dict(reference.named_modules()) if reference is not None else {}
    out = []
    for name, m in model.named_modules():
        if not name:
            continue
        spec = _module_spec(m)
        if spec is None:
            continue
        r = ref.get(name)
        if r is not None and type(r) is type(m) and _module_spec(r) == spec:
            continue
        out.append({"name": name, **spec})
    return out


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def apply_structure(model: nn.Module, structure: list[dict[str, Any]]) -> None:
    for spec in structure:
        codec = _CODECS_BY_KIND.get(spec["kind"])
        if codec is None:
            _ensure_codecs_loaded()
            codec = _CODECS_BY_KIND.get(spec["kind"])
        if codec is None:
            raise CheckpointError(
                f"checkpoint needs module kind {spec['kind']!r} for {spec['name']}, which this torchslim "
                f"{__version__} does not know; upgrade torchslim"
            )
        try:
            model.get_submodule(spec["name"])
        except AttributeError as exc:
            raise CheckpointError(f"checkpoint names module {spec['name']!r}, which this architecture lacks") from exc
        _set_module(model, spec["name"], codec.from_config(spec["config"]))


def _ensure_codecs_loaded() -> None:
    # Compression modules register their codecs on import.
    import importlib

    for mod in ("torchslim.quantization", "torchslim.pruning"):
        try:
            importlib.import_module(mod)
        except ImportError:
            pass


# ----------------------------------------------------------------------------- tensor encodings
def encode_tensor(name: str, t: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Store a mostly-zero float tensor as a packed bitmask plus its non-zero values.

    Dense float costs 32 bits per element; bitmask + values costs ``1 + 32 * density`` bits, so it
    wins as soon as more than ~3% of the elements are zero. Others are stored dense.
    """
    if not t.is_floating_point() or t.numel() < 64:
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
    bits = np.unpackbits(tensors[f"{name}::mask"].numpy())[:n].astype(bool)
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


def _clean_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage and non-contiguous tensors; clone each one.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


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
    structure = structure_of(model, reference) if reference is not None or architecture is None else []
    tensors: dict[str, torch.Tensor] = {}
    encodings: dict[str, Any] = {}
    for k, v in _clean_state(model).items():
        stored, enc = encode_tensor(k, v) if sparse else ({k: v}, None)
        tensors.update(stored)
        if enc is not None:
            encodings[k] = enc
    full_meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": {"name": architecture, "config": architecture_config or {}},
        "structure": structure,
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
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupt") from exc
    meta_s = header.get("__metadata__", {}).get("torchslim")
    if meta_s is None:
        raise CheckpointError(f"{path} is a safetensors file but not a torchslim checkpoint (no torchslim metadata)")
    meta = json.loads(meta_s)
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format {meta.get('format')} v{meta.get('format_version')}; upgrade torchslim")
    for name, enc in meta.get("encodings", {}).items():
        tensors[name] = decode_tensor(name, tensors, enc)
        tensors.pop(f"{name}::mask", None)
        tensors.pop(f"{name}::values", None)
    return tensors, meta


def check_state_matches(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped tensor."""
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = sorted(k for k in tensors if k not in own)
    shapes = [
        f"{k} (checkpoint {tuple(tensors[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"{source} does not fit this model ({'; '.join(parts)}); it belongs to another architecture")


def load_checkpoint(path: str | Path, *, model: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored at ``path``; returns ``(model, metadata)``.

    With ``model`` given (an architecture torchslim does not register), a deep copy of it receives
    the structure and weights; the argument itself is not modified.
    """
    tensors, meta = read_checkpoint(path)
    arch = meta.get("architecture", {})
    if model is not None:
        model = copy.deepcopy(model)
    elif arch.get("name"):
        from torchslim.models import create_model

        model = create_model(arch["name"], **arch.get("config", {}))
    else:
        raise CheckpointError(f"{path} stores a model of an unregistered architecture; pass model= to load it into")
    apply_structure(model, meta.get("structure", []))
    check_state_matches(model, tensors, str(path))
    model.load_state_dict(tensors, strict=True)
    return model.eval(), meta


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights from a torchslim checkpoint or a plain safetensors file into ``model`` in place."""
    path = Path(path)
    try:
        tensors, _ = read_checkpoint(path)
    except CheckpointError:
        try:
            tensors = st_load(path.read_bytes())
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    check_state_matches(model, tensors, str(path))
    model.load_state_dict(tensors, strict=True)
    return model
