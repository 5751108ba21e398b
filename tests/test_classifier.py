"""Classifier checkpoints: reference pickles loaded safely, native format, conversion, download."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.classifier import reference
from virnucpro.classifier.checkpoints import (
    convert_reference,
    load_classifier_file,
    load_native,
    load_reference_pickle,
    reference_meta,
    save_native,
)
from virnucpro.classifier.compatibility import check_compatible, model_name_key
from virnucpro.classifier.model import ClassifierMeta, MLPClassifier
from virnucpro.classifier.pickle_scan import pickle_imports
from virnucpro.classifier.reference import (
    default_cache_dir,
    fetch_reference_classifier,
    git_blob_id,
    resolve_classifier,
)
from virnucpro.cli import main
from virnucpro.errors import ModelError

DNA_DIM = 768
ESM_DIM = 16
HIDDEN = 32


class RefMLP(nn.Module):
    """Upstream's layout: the attribute names and forward of ``__main__.MLPClassifier``."""

    def __init__(self, input_dim: int, hidden_dim: int, num_class: int) -> None:
        super().__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.dropout(F.relu(self.bn1(self.hidden_layer(x)))))


RefMLP.__module__ = "__main__"
RefMLP.__name__ = RefMLP.__qualname__ = "MLPClassifier"


def _marker_payload(path: str) -> None:
    """What a malicious pickle would run: create a marker file."""
    Path(path).write_text("ran")


class _Evil:
    """Unpickling calls ``func(*args)``."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _reference_module(seed: int = 0) -> RefMLP:
    torch.manual_seed(seed)
    module = RefMLP(DNA_DIM + ESM_DIM, HIDDEN, 2)
    with torch.no_grad():  # non-trivial BatchNorm statistics so eval mode matters
        module.bn1.running_mean.uniform_(-1, 1)
        module.bn1.running_var.uniform_(0.5, 2)
        module.bn1.weight.uniform_(0.5, 1.5)
        module.bn1.bias.uniform_(-0.5, 0.5)
    return module.eval()


def _save_as_main(monkeypatch, obj, path: Path, **kwargs) -> Path:
    """torch.save with ``__main__.MLPClassifier`` resolvable, as upstream's train.py did."""
    with monkeypatch.context() as patch:
        patch.setattr(sys.modules["__main__"], "MLPClassifier", RefMLP, raising=False)
        torch.save(obj, path, **kwargs)
    return path


@pytest.fixture
def ref_module() -> RefMLP:
    return _reference_module()


@pytest.fixture
def ref_file(tmp_path, monkeypatch, ref_module) -> Path:
    return _save_as_main(monkeypatch, ref_module, tmp_path / "300_model.pth")


@pytest.fixture
def features() -> torch.Tensor:
    return torch.randn(7, DNA_DIM + ESM_DIM, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- reference pickle


def test_reference_pickle_loads_safely_with_same_outputs(ref_file, ref_module, features):
    model, meta = load_reference_pickle(ref_file, 300)
    assert isinstance(model, MLPClassifier) and not model.training
    with torch.no_grad():
        assert torch.equal(model(features), ref_module(features))
    assert (meta.dna_dim, meta.esm_dim, meta.hidden_dim, meta.chunk_length) == (DNA_DIM, ESM_DIM, HIDDEN, 300)
    assert meta.dna_model is None and meta.esm_layer is None  # not the 3328-d reference models


def test_reference_meta_names_models_for_3328_inputs():
    meta = reference_meta(3328, 500)
    assert (meta.dna_dim, meta.esm_dim, meta.chunk_length) == (768, 2560, 500)
    assert (meta.dna_model, meta.esm_model, meta.esm_layer) == ("zhihan1996/DNABERT-S", "esm2_t36_3B_UR50D", 36)
    with pytest.raises(ModelError, match="768"):
        reference_meta(700, 300)


def test_pickled_other_module_refused(tmp_path):
    """A pickle of something other than the MLP (even of allowed classes) is refused cleanly."""
    path = tmp_path / "linear.pth"
    torch.save(nn.Linear(4, 2), path)
    with pytest.raises(ModelError, match="not a reference MLPClassifier"):
        load_reference_pickle(path)


def test_reference_with_extra_parameter_layer_refused(tmp_path, monkeypatch, ref_module):
    ref_module.extra = nn.Linear(2, 2)
    path = _save_as_main(monkeypatch, ref_module, tmp_path / "extra.pth")
    with pytest.raises(ModelError, match="unexpected layers: extra"):
        load_reference_pickle(path)


@pytest.mark.parametrize(
    ("make_payload", "import_name"),
    [
        (lambda marker: _Evil(_marker_payload, marker), "_marker_payload"),
        (lambda marker: _Evil(os.system, f"touch {marker}"), "system"),
        (lambda marker: _Evil(builtins.eval, f"open({marker!r}, 'w')"), "builtins.eval"),
        (lambda marker: _Evil(builtins.exec, f"open({marker!r}, 'w')"), "builtins.exec"),
    ],
    ids=["function", "os.system", "eval", "exec"],
)
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_refused_and_nothing_runs(tmp_path, make_payload, import_name, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save(make_payload(str(marker)), path, pickle_protocol=protocol)
    for loader in (load_reference_pickle, load_classifier_file):
        with pytest.raises(ModelError, match=rf"refused: it would import .*{import_name}") as info:
            loader(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


def test_malicious_payload_inside_a_real_reference_module_refused(tmp_path, monkeypatch, ref_module):
    marker = tmp_path / "marker"
    ref_module.note = _Evil(os.system, f"touch {marker}")
    path = _save_as_main(monkeypatch, ref_module, tmp_path / "300_model.pth")
    with pytest.raises(ModelError, match="refused: it would import posix.system"):
        load_reference_pickle(path, 300)
    assert not marker.exists()


def test_plain_pickle_and_legacy_format_refused_without_running(tmp_path, ref_module):
    marker = tmp_path / "marker"
    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps(_Evil(os.system, f"touch {marker}")))
    legacy = tmp_path / "legacy.pth"
    torch.save(_Evil(os.system, f"touch {marker}"), legacy, _use_new_zipfile_serialization=False)
    for path in (plain, legacy):
        with pytest.raises(ModelError, match="not a torch.save zip checkpoint"):
            load_classifier_file(path, 300)
    assert not marker.exists()


def test_pickle_imports_resolves_memoized_stack_global():
    data = pickle.dumps([_Evil(os.system, "x"), _Evil(os.system, "y")], protocol=4)  # 2nd uses the memo
    assert pickle_imports(data) == {"posix.system"}
    assert pickle_imports(pickle.dumps({"a": [1, 2.5, "s"]}, protocol=2)) == set()


# --------------------------------------------------------------------------- native + conversion


def test_native_round_trip(tmp_path, features):
    torch.manual_seed(3)
    model = MLPClassifier(DNA_DIM + ESM_DIM, hidden_dim=HIDDEN).eval()
    meta = ClassifierMeta(
        DNA_DIM, ESM_DIM, chunk_length=500, dna_model="tiny-dna", esm_model="tiny-esm", esm_layer=2, hidden_dim=HIDDEN
    )
    path = tmp_path / "native.pt"
    save_native(path, model, meta)
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["version"]) == ("virnucpro-classifier", 1)
    loaded, loaded_meta = load_native(path)
    assert loaded_meta == meta and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(features), model(features))
    assert [p.name for p in tmp_path.iterdir()] == ["native.pt"]  # no temporary left behind


def test_save_native_refuses_inconsistent_meta(tmp_path):
    with pytest.raises(ModelError, match="metadata"):
        save_native(tmp_path / "x.pt", MLPClassifier(20, hidden_dim=4), ClassifierMeta(10, 5, hidden_dim=4))


def test_load_native_rejects_reference_and_junk(ref_file, tmp_path):
    with pytest.raises(ModelError, match="not a native"):
        load_native(ref_file)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01not a checkpoint")
    with pytest.raises(ModelError, match="not a native"):
        load_native(junk)
    with pytest.raises(ModelError, match="not found"):
        load_native(tmp_path / "missing.pt")


def test_convert_library_round_trip(ref_file, ref_module, tmp_path, features):
    dst = tmp_path / "out" / "native.pt"
    meta = convert_reference(ref_file, dst, 300)
    model, loaded_meta = load_classifier_file(dst, 300)
    assert loaded_meta == meta and loaded_meta.chunk_length == 300
    with torch.no_grad():
        assert torch.equal(model(features), ref_module(features))
    with pytest.raises(ModelError, match="300 bp chunks, not --chunk-length 500"):
        load_classifier_file(dst, 500)


def test_convert_cli_round_trip(ref_file, ref_module, tmp_path, features, capsys):
    dst = tmp_path / "native.pt"
    assert main(["convert-checkpoint", str(ref_file), str(dst), "--chunk-length", "300", "--quiet"]) == 0
    assert str(dst) in capsys.readouterr().out
    model, meta = load_native(dst)
    assert meta.chunk_length == 300
    with torch.no_grad():
        assert torch.equal(model(features), ref_module(features))


def test_convert_cli_refuses_malicious_file(tmp_path, capsys):
    marker = tmp_path / "marker"
    src = tmp_path / "evil.pth"
    torch.save(_Evil(os.system, f"touch {marker}"), src)
    code = main(["convert-checkpoint", str(src), str(tmp_path / "out.pt"), "--chunk-length", "500"])
    err = capsys.readouterr().err
    assert code == 1 and "refused" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out.pt").exists()
    assert main(["convert-checkpoint", str(src), str(tmp_path / "out.pt")]) == 1  # --chunk-length required


# --------------------------------------------------------------------------- compatibility


def _meta(**kwargs) -> ClassifierMeta:
    base = dict(dna_dim=768, esm_dim=2560, chunk_length=300, esm_layer=36)
    names = dict(dna_model="zhihan1996/DNABERT-S", esm_model="esm2_t36_3B_UR50D")
    return ClassifierMeta(**{**base, **names, **kwargs})


def test_check_compatible_accepts_matching_and_unnamed():
    check_compatible(_meta(), dna_dim=768, esm_dim=2560, chunk_length=300, dna_model="/models/DNABERT-S",
                     esm_model="/data/esm2_t36_3B_UR50D.pt", esm_layer=36)
    check_compatible(_meta(dna_model=None, esm_model=None, esm_layer=None, chunk_length=None),
                     dna_dim=768, esm_dim=2560, chunk_length=500, dna_model="x", esm_model="y", esm_layer=3)
    check_compatible(_meta(), dna_dim=768, esm_dim=2560)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"esm_dim": 1280}, "768-d \\+ 1280-d"),
        ({"dna_dim": 64}, "64-d \\+ 2560-d"),
        ({"chunk_length": 500}, "300 bp chunks"),
        ({"esm_layer": 33}, "ESM layer 36, not layer 33"),
    ],
)
def test_check_compatible_refuses_mismatch(kwargs, message):
    """Dimensions, chunk length and layer must match (model names only warn, see below)."""
    args = {"dna_dim": 768, "esm_dim": 2560, **kwargs}
    with pytest.raises(ModelError, match=message) as info:
        check_compatible(_meta(source="clf.pt"), **args)
    assert "\n" not in str(info.value) and str(info.value).startswith("clf.pt: ")


def test_model_name_key():
    hub = "/home/u/.cache/huggingface/hub/models--zhihan1996--DNABERT-S/snapshots/abc123"
    assert {model_name_key(n) for n in ("zhihan1996/DNABERT-S", "/m/DNABERT-S/", hub)} == {"dnabert-s"}
    assert model_name_key("/w/esm2_t36_3B_UR50D.pt") == model_name_key("esm2_t36_3B_UR50D")
    assert model_name_key("esm2_t6_8M_UR50D") != model_name_key("esm2_t36_3B_UR50D")


# --------------------------------------------------------------------------- download cache


def test_git_blob_id_matches_git(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 41 + b"tail")
    expected = subprocess.run(["git", "hash-object", str(path)], check=True, capture_output=True, text=True).stdout
    assert git_blob_id(path) == expected.strip()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VIRNUCPRO_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("VIRNUCPRO_CACHE")
    assert default_cache_dir() == tmp_path / "x" / "virnucpro"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "virnucpro"


def test_reference_url_points_at_upstream():
    assert reference.reference_url(500).endswith("/Li-Jing-1997/VirNucPro/main/500_model.pth")
    with pytest.raises(ModelError, match="chunk length 400"):
        reference.reference_url(400)


@pytest.fixture
def served(ref_file, monkeypatch) -> Path:
    """The test reference file, registered as the genuine 300 bp classifier."""
    monkeypatch.setitem(reference.REFERENCE_BLOB_IDS, 300, git_blob_id(ref_file))
    return ref_file


def _no_network(*_args, **_kwargs):
    raise AssertionError("the URL must not be read")


def _serve(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Download the reference classifiers from ``url`` (for this test only)."""
    monkeypatch.setattr(reference, "REFERENCE_URL_TEMPLATE", url)


def test_fetch_downloads_verifies_then_uses_cache(served, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _serve(monkeypatch, served.as_uri())
    path = fetch_reference_classifier(300, cache)
    assert path == cache / "300_model.pth" and path.read_bytes() == served.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["300_model.pth"]
    (cache / "plain").write_text("x")  # a shared cache: the mode any file written here gets, not mkstemp's 0600
    assert path.stat().st_mode & 0o777 == (cache / "plain").stat().st_mode & 0o777
    monkeypatch.setattr(reference.urllib.request, "urlopen", _no_network)
    _serve(monkeypatch, "http://127.0.0.1:9/never")
    assert fetch_reference_classifier(300, cache) == path


def test_fetch_replaces_a_corrupt_cached_file(served, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "300_model.pth").write_bytes(b"truncated")
    _serve(monkeypatch, served.as_uri())
    path = fetch_reference_classifier(300, cache)
    assert git_blob_id(path) == reference.REFERENCE_BLOB_IDS[300]


def test_fetch_wrong_content_refused_and_not_cached(served, tmp_path, monkeypatch):
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(served.read_bytes() + b"x")
    cache = tmp_path / "cache"
    _serve(monkeypatch, wrong.as_uri())
    with pytest.raises(ModelError, match="blob id .* expected"):
        fetch_reference_classifier(300, cache)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/300_model.pth", "file:///nonexistent/dir/300_model.pth"])
def test_fetch_offline_error(served, tmp_path, monkeypatch, url):
    cache = tmp_path / "cache"
    _serve(monkeypatch, url)
    with pytest.raises(ModelError, match="could not download") as info:
        fetch_reference_classifier(300, cache)
    message = str(info.value)
    assert url in message and str(cache / "300_model.pth") in message and "--classifier" in message
    assert "\n" not in message and list(cache.iterdir()) == []


def test_fetch_classifier_cli(served, tmp_path, monkeypatch, capsys):
    _serve(monkeypatch, served.parent.as_uri() + "/{chunk_length}_model.pth")
    cache = tmp_path / "cache"
    assert main(["fetch-classifier", "300", "--cache-dir", str(cache), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "300_model.pth")


def test_resolve_classifier(served, tmp_path, monkeypatch, ref_module, features):
    cache = tmp_path / "cache"
    _serve(monkeypatch, served.as_uri())
    fetch_reference_classifier(300, cache)
    monkeypatch.setattr(reference.urllib.request, "urlopen", _no_network)
    monkeypatch.setenv("VIRNUCPRO_CACHE", str(cache))  # where --classifier 300 looks
    model, meta = resolve_classifier("300", 300)
    assert meta.chunk_length == 300
    with torch.no_grad():
        assert torch.equal(model(features), ref_module(features))
    with pytest.raises(ModelError, match="does not match --chunk-length 500"):
        resolve_classifier("300", 500)
    native = tmp_path / "native.pt"
    convert_reference(served, native, 300)
    assert resolve_classifier(str(native), None)[1].chunk_length == 300
    assert resolve_classifier(str(served), 300)[1].source == "reference:300_model.pth"
    with pytest.raises(ModelError, match="not found"):
        resolve_classifier(str(tmp_path / "missing.pt"), 300)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dna_model": "tiny-dna"}, "DNA model 'zhihan1996/DNABERT-S', not 'tiny-dna'"),
        ({"esm_model": "esm2_t33_650M_UR50D"}, "ESM model 'esm2_t36_3B_UR50D', not 'esm2_t33_650M_UR50D'"),
    ],
)
def test_check_compatible_warns_on_other_model_names(kwargs, message, caplog):
    from helpers import captured_log

    with captured_log(caplog):
        check_compatible(_meta(source="clf.pt"), dna_dim=768, esm_dim=2560, **kwargs)
    assert message in caplog.text


# --------------------------------------------------------------------------- unusable weights


def _native_with(tmp_path: Path, name: str, num_class: int = 2, poison: str | None = None) -> Path:
    torch.manual_seed(4)
    model = MLPClassifier(DNA_DIM + ESM_DIM, hidden_dim=HIDDEN, num_class=num_class).eval()
    if poison is not None:
        with torch.no_grad():
            model.state_dict()[poison].view(-1)[-1] = float("nan")
    path = tmp_path / name
    payload = {"format": "virnucpro-classifier", "version": 1, "state_dict": model.state_dict(),
               "meta": ClassifierMeta(DNA_DIM, ESM_DIM, hidden_dim=HIDDEN).to_dict()}  # fmt: skip
    torch.save(payload, path)
    return path


def test_a_classifier_with_another_number_of_outputs_is_refused_when_loading(tmp_path, monkeypatch):
    path = _native_with(tmp_path, "three.pt", num_class=3)
    with pytest.raises(ModelError, match=r"three.pt: classifier has 3 outputs, not 2 \(others, virus\)$"):
        load_classifier_file(path)
    ref = _save_as_main(monkeypatch, RefMLP(DNA_DIM + ESM_DIM, HIDDEN, 3).eval(), tmp_path / "300_model.pth")
    with pytest.raises(ModelError, match="3 outputs, not 2"):
        load_classifier_file(ref, 300)


@pytest.mark.parametrize("poison", ["hidden_layer.weight", "output_layer.bias", "bn1.running_var"])
def test_non_finite_classifier_weights_are_refused_when_loading(tmp_path, monkeypatch, poison):
    with pytest.raises(ModelError, match=f"nan.pt: classifier weights are not finite \\('{poison}'"):
        load_classifier_file(_native_with(tmp_path, "nan.pt", poison=poison))
    module = _reference_module()
    with torch.no_grad():
        target = module.bn1.running_var if "running" in poison else module.get_parameter(poison)
        target.view(-1)[0] = float("inf")
    ref = _save_as_main(monkeypatch, module, tmp_path / "300_model.pth")
    with pytest.raises(ModelError, match="not finite"):
        load_classifier_file(ref, 300)
