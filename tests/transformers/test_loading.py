import json
import sys

import pytest

from torchslim.errors import CheckpointError, MissingDependencyError
from torchslim.transformers.loading import load_encoder
from torchslim.transformers.testing import save_tiny_bert


def test_loads_model_and_tokenizer(tmp_path):
    m, tok = load_encoder(save_tiny_bert(tmp_path / "ok"))
    assert m.config.hidden_size == 32 and tok.tokenize("tools") == ["tools"]


def test_folder_without_weights(tmp_path):
    d = save_tiny_bert(tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="holds no weights"):
        load_encoder(d)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="is not a folder"):
        load_encoder(tmp_path / "nope")


@pytest.mark.parametrize("change, msg", [({"hidden_size": 48}, "cannot load the model"),
                                         ({"num_hidden_layers": 3}, "does not match its weights: encoder.layer.2")])  # fmt: skip
def test_config_not_matching_weights(tmp_path, change, msg):
    d = save_tiny_bert(tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(change)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=msg):
        load_encoder(d)


def test_missing_tokenizer(tmp_path):
    with pytest.raises(CheckpointError, match="has no tokenizer"):
        load_encoder(save_tiny_bert(tmp_path / "m", tokenizer=False))


def test_transformers_not_installed(tmp_path, monkeypatch):
    d = save_tiny_bert(tmp_path / "m")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'torchslim\[hf\]'"):
        load_encoder(d)
