"""Classifier checkpoint formats: native (state dict + metadata) and the reference pickles.

Native format: ``torch.save`` of a plain dict
``{"format": "virnucpro-classifier", "version": 1, "state_dict": {...}, "meta": {...}}``,
readable with ``torch.load(weights_only=True)``.

Reference format: upstream's ``300_model.pth`` / ``500_model.pth``, a whole ``nn.Module``
pickled as ``__main__.MLPClassifier``. It is read without unrestricted unpickling (see
:func:`load_reference_pickle`): every import the pickle asks for is listed by a static
scan of its opcodes (:mod:`virnucpro.classifier.pickle_scan`) and checked against an
allow-list before anything is unpickled, and the unpickling itself then runs in torch's
``weights_only`` unpickler.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from virnucpro.atomic import atomic_open
from virnucpro.classifier.calibration import uncalibrated, with_calibration
from virnucpro.classifier.compatibility import check_compatible
from virnucpro.classifier.model import NUM_CLASSES, ClassifierMeta, MLPClassifier
from virnucpro.classifier.pickle_scan import pickle_imports
from virnucpro.contracts import (
    REFERENCE_DNA_DIM,
    REFERENCE_DNA_MODEL,
    REFERENCE_ESM_DIM,
    REFERENCE_ESM_LAYER,
    REFERENCE_ESM_MODEL,
)
from virnucpro.errors import ModelError, describe, raise_interruption_behind
from virnucpro.log import get_logger

log = get_logger("classifier")

NATIVE_FORMAT = "virnucpro-classifier"
NATIVE_VERSION = 1

# --------------------------------------------------------------------------- native


def save_native(path: Path, model: MLPClassifier, meta: ClassifierMeta, training: dict | None = None) -> None:
    """Write a native checkpoint atomically (loadable with ``torch.load(weights_only=True)``).

    ``training`` (plain data: how the classifier was trained, see virnucpro.training) is stored
    beside the weights under the key ``"training"``; the bytes depend only on what is stored.
    """
    model = uncalibrated(model)  # type: ignore[assignment]
    if model.hidden_layer.in_features != meta.input_dim:
        raise ModelError(
            f"{path}: classifier input is {model.hidden_layer.in_features}-d but the metadata says "
            f"{meta.dna_dim} + {meta.esm_dim} = {meta.input_dim}"
        )
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": NATIVE_FORMAT, "version": NATIVE_VERSION, "state_dict": state, "meta": meta.to_dict()}
    if training is not None:
        payload["training"] = training
    with atomic_open(Path(path), "wb") as handle:  # a handle: the archive's name inside is fixed, not the file's
        torch.save(payload, handle)


def _is_native_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("format") == NATIVE_FORMAT


def load_native(path: Path) -> tuple[MLPClassifier, ClassifierMeta]:
    """Load a native checkpoint (weights only, no code) into an eval-mode classifier."""
    path = Path(path)
    _require_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (any unreadable file is a user error)
        raise ModelError(f"{path}: not a native virnucpro classifier checkpoint ({describe(error)})") from None
    if not _is_native_payload(payload):
        raise ModelError(f"{path}: not a native virnucpro classifier checkpoint (no '{NATIVE_FORMAT}' header)")
    return _model_from_payload(path, payload)


def _model_from_payload(path: Path, payload: dict) -> tuple[MLPClassifier, ClassifierMeta]:
    version = payload.get("version")
    if version != NATIVE_VERSION:
        raise ModelError(f"{path}: native checkpoint version {version!r} is not supported (expected {NATIVE_VERSION})")
    try:
        meta = ClassifierMeta.from_dict(dict(payload["meta"]))
        state = payload["state_dict"]
        model = MLPClassifier(meta.input_dim, hidden_dim=meta.hidden_dim, num_class=_num_classes(state))
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelError(f"{path}: damaged native classifier checkpoint ({describe(error)})") from None
    check_usable(path, model)
    meta.path = str(path)
    try:
        return with_calibration(model.eval(), meta.calibration), meta  # type: ignore[return-value]
    except ModelError as error:
        raise ModelError(f"{path}: {error}") from None


def load_training_info(path: Path) -> dict | None:
    """What a native checkpoint says about its training (``virnucpro train``), None when nothing."""
    payload = _try_native_payload(Path(path)) if Path(path).is_file() else None
    training = payload.get("training") if payload else None
    return training if isinstance(training, dict) else None


def _num_classes(state: dict) -> int:
    return int(state["output_layer.weight"].shape[0])

# --------------------------------------------------------------------------- reference


class _ReferenceMLP(nn.Module):
    """Stand-in for upstream's ``__main__.MLPClassifier``: an empty module to receive the pickled state.

    It is created with ``__new__`` and filled by ``nn.Module.__setstate__``; none of its
    methods are ever called on untrusted data (the tensors are read from ``__dict__``).
    """


# Every import a pickled reference module may make: containers, tensor rebuilding, the storage
# types (named in persistent ids) ...
_PLAIN_GLOBALS = frozenset(
    {
        "collections.OrderedDict",
        "builtins.set",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
    }
    | {
        f"torch.{kind}Storage"
        for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
    }
)
# ... and the module classes. Upstream's ``__main__.MLPClassifier`` (and ours, should someone
# pickle a whole virnucpro model) map to the empty stand-in; torch.nn classes map to themselves.
_REFERENCE_CLASSES: dict[str, type] = {
    "__main__.MLPClassifier": _ReferenceMLP,
    "virnucpro.classifier.model.MLPClassifier": _ReferenceMLP,
    "torch.nn.modules.linear.Linear": nn.Linear,
    "torch.nn.modules.batchnorm.BatchNorm1d": nn.BatchNorm1d,
    "torch.nn.modules.dropout.Dropout": nn.Dropout,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
}
# Submodules of the reference MLP: name -> (class, parameter names, buffer names).
_LAYERS: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    "hidden_layer": (nn.Linear, ("weight", "bias"), ()),
    "bn1": (nn.BatchNorm1d, ("weight", "bias"), ("running_mean", "running_var", "num_batches_tracked")),
    "output_layer": (nn.Linear, ("weight", "bias"), ()),
}
_PARAMETER_FREE = (nn.Dropout, nn.ReLU)


def _safe_globals() -> list[tuple[type, str]]:
    return [(cls, name) for name, cls in _REFERENCE_CLASSES.items()]


def _pickle_bytes(path: Path) -> bytes:
    """The pickle stream of a ``torch.save`` zip file (``<archive>/data.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(names) != 1:
                raise ModelError(f"{path}: not a torch.save checkpoint (no single data.pkl in the archive)")
            return archive.read(names[0])
    except zipfile.BadZipFile:
        raise ModelError(
            f"{path}: not a torch.save zip checkpoint (legacy or unknown format; re-save it with torch >= 1.6)"
        ) from None


def check_pickle_imports(path: Path, allowed: set[str]) -> None:
    """Refuse a checkpoint whose pickle would import anything outside ``allowed``; nothing is unpickled."""
    imports = pickle_imports(_pickle_bytes(path), source=path)
    refused = sorted(name for name in imports if name not in allowed)
    if refused:
        raise ModelError(
            f"{path}: refused: it would import {', '.join(refused)} (not a plain classifier; "
            "loading it could run code)"
        )


def _module_state(obj: Any) -> dict[str, Any]:
    state = getattr(obj, "__dict__", None)
    if not isinstance(state, dict):
        raise TypeError("not a module")
    return state


def _layer_tensors(path: Path, modules: dict, name: str) -> dict[str, torch.Tensor]:
    cls, params, buffers = _LAYERS[name]
    layer = modules.get(name)
    if type(layer) is not cls:
        raise ModelError(f"{path}: reference classifier has no {cls.__name__} '{name}' layer")
    state = _module_state(layer)
    found: dict[str, torch.Tensor] = {}
    for group, names in (("_parameters", params), ("_buffers", buffers)):
        values = state.get(group) or {}
        for key in names:
            value = values.get(key)
            if value is None and key == "num_batches_tracked":
                continue
            if not isinstance(value, torch.Tensor):
                raise ModelError(f"{path}: reference classifier layer '{name}' has no tensor '{key}'")
            found[f"{name}.{key}"] = value.detach().clone()
    if cls is nn.BatchNorm1d:
        eps = state.get("eps", 1e-5)
        if not isinstance(eps, float) or abs(eps - 1e-5) > 1e-12:
            raise ModelError(f"{path}: reference classifier BatchNorm eps {eps!r} is not the supported 1e-05")
    return found


def _reference_state_dict(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    """Read the weights out of the unpickled stand-in without calling any of its methods."""
    if type(obj) is not _ReferenceMLP:
        raise ModelError(f"{path}: not a reference MLPClassifier (found {type(obj).__name__})")
    modules = _module_state(obj).get("_modules")
    if not isinstance(modules, dict):
        raise ModelError(f"{path}: reference classifier has no layers")
    unknown = sorted(
        k for k, v in modules.items() if k not in _LAYERS and not isinstance(v, _PARAMETER_FREE)
    )
    if unknown:
        raise ModelError(f"{path}: reference classifier has unexpected layers: {', '.join(unknown)}")
    state: dict[str, torch.Tensor] = {}
    for name in _LAYERS:
        state.update(_layer_tensors(path, modules, name))
    return state


def reference_meta(
    input_dim: int, chunk_length: int | None, dna_dim: int = REFERENCE_DNA_DIM, source: str = ""
) -> ClassifierMeta:
    """Metadata for a reference classifier: DNABERT-S first, the rest ESM-2; names only for 768 + 2560."""
    if input_dim <= dna_dim:
        raise ModelError(
            f"{source or 'classifier'}: input is {input_dim}-d, not more than the {dna_dim}-d DNA embedding"
        )
    esm_dim = input_dim - dna_dim
    known = dna_dim == REFERENCE_DNA_DIM and esm_dim == REFERENCE_ESM_DIM
    return ClassifierMeta(
        dna_dim=dna_dim,
        esm_dim=esm_dim,
        chunk_length=chunk_length,
        dna_model=REFERENCE_DNA_MODEL if known else None,
        esm_model=REFERENCE_ESM_MODEL if known else None,
        esm_layer=REFERENCE_ESM_LAYER if known else None,
        source=source,
    )


def load_reference_pickle(
    path: Path, chunk_length: int | None = None, *, dna_dim: int = REFERENCE_DNA_DIM
) -> tuple[MLPClassifier, ClassifierMeta]:
    """Load upstream's pickled ``__main__.MLPClassifier`` without running code from the file.

    The pickle's imports are checked statically first (anything outside the allow-list is
    refused before unpickling starts), then the file is read by torch's weights-only
    unpickler with the stand-in class mapped to ``__main__.MLPClassifier``.
    """
    path = Path(path)
    _require_file(path)
    check_pickle_imports(path, _PLAIN_GLOBALS | set(_REFERENCE_CLASSES))
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (the weights-only unpickler refused or the file is damaged)
        raise ModelError(f"{path}: refused: not a plain reference classifier ({describe(error)})") from None
    state = _reference_state_dict(path, obj)
    weight = state["hidden_layer.weight"]
    output = state["output_layer.weight"]
    hidden_dim, input_dim = weight.shape
    meta = reference_meta(int(input_dim), chunk_length, dna_dim, source=f"reference:{path.name}")
    meta.hidden_dim, meta.path = int(hidden_dim), str(path)
    model = MLPClassifier(int(input_dim), hidden_dim=int(hidden_dim), num_class=int(output.shape[0]))
    state.setdefault("bn1.num_batches_tracked", torch.tensor(0, dtype=torch.long))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelError(f"{path}: reference classifier has inconsistent layer shapes ({describe(error)})") from None
    check_usable(path, model)
    log.debug("loaded reference classifier %s (%d -> %d -> %d)", path, input_dim, hidden_dim, output.shape[0])
    return model.eval(), meta


# --------------------------------------------------------------------------- either


def load_classifier_file(path: Path, chunk_length: int | None = None) -> tuple[MLPClassifier, ClassifierMeta]:
    """Load a native checkpoint or a reference pickle, whichever ``path`` is.

    ``chunk_length`` fills in the reference format's missing chunk length; for a native
    checkpoint that names one, a different value is refused.
    """
    path = Path(path)
    _require_file(path)
    payload = _try_native_payload(path)
    if payload is None:
        return load_reference_pickle(path, chunk_length)
    model, meta = _model_from_payload(path, payload)
    if chunk_length is not None:
        check_compatible(meta, dna_dim=meta.dna_dim, esm_dim=meta.esm_dim, chunk_length=chunk_length, source=path)
    return model, meta


def _try_native_payload(path: Path) -> dict | None:
    """The native payload, or None when the file is something else (e.g. a reference pickle)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on non-default pickle protocols
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (not loadable as plain weights: maybe a reference pickle)
        raise_interruption_behind(error)
        return None
    return payload if _is_native_payload(payload) else None


def convert_reference(src: Path, dst: Path, chunk_length: int, *, dna_dim: int = REFERENCE_DNA_DIM) -> ClassifierMeta:
    """Turn a reference pickle into a native checkpoint (same weights, plus metadata)."""
    model, meta = load_reference_pickle(src, chunk_length, dna_dim=dna_dim)
    save_native(Path(dst), model, meta)
    log.info("converted %s -> %s (%d-d input, chunk length %d)", src, dst, meta.input_dim, chunk_length)
    return meta


# --------------------------------------------------------------------------- helpers


def check_usable(path: Path, model: MLPClassifier) -> None:
    """Refuse a classifier that cannot give (others, virus) scores: another output width, or
    weights or batch-norm statistics that are not finite (NaN or infinite scores, every call wrong)."""
    width = model.output_layer.out_features
    if width != NUM_CLASSES:
        raise ModelError(
            f"{path}: classifier has {width} outputs, not {NUM_CLASSES} (others, virus)"
        )
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"{path}: classifier weights are not finite ('{name}' holds NaN or infinity)")


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"{path}: classifier file not found")


