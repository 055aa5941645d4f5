"""``hf:<folder or hub id>`` trunks: tiny transformers models built offline (vision and text),
their widths and input configs read from the model, the local cache, bad names, and Task
Adaptation from run files."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tlroutes.backbones import create_stem, create_trunk
from tlroutes.backbones.inputs import trunk_input_config
from tlroutes.errors import ConfigError
from tlroutes.problem import Domain

transformers = pytest.importorskip("transformers")

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "movie", "was", "very", "plot"]


def tiny_vit(folder, *, processor: bool = True):
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, image_size=16, patch_size=4)
    transformers.ViTModel(config).save_pretrained(folder)
    if processor:
        transformers.ViTImageProcessor(
            size={"height": 16, "width": 16}, image_mean=[0.4, 0.5, 0.6],
            image_std=[0.2, 0.3, 0.4], resample=3).save_pretrained(folder)
    return folder


def tiny_bert(folder):
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    transformers.BertTokenizer(vocab_file=str(vocab)).save_pretrained(folder)
    config = transformers.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def test_vision_model_reads_width_and_processor(tmp_path):
    folder = tiny_vit(tmp_path / "vit")
    name = f"hf:{folder}"
    trunk = create_trunk(name).eval()
    assert (trunk.input_kind, trunk.in_width, trunk.out_dim) == ("image", 3, 32)
    assert trunk.model.pooler is None  # ViT's dense pooler is not what the features use
    config = trunk_input_config(name)
    assert config.size == (16, 16) and config.interpolation == "bicubic"
    assert config.mean == (0.4, 0.5, 0.6) and config.std == (0.2, 0.3, 0.4)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():  # the features are the saved model's class token
        direct = transformers.ViTModel.from_pretrained(folder).eval()(pixel_values=x)
        torch.testing.assert_close(trunk(x), direct.last_hidden_state[:, 0])
    # the default stem prepares grey 8x8 digits as the model's processor would
    stem = create_stem(Domain("digits", "image", (1, 8, 8)), trunk)
    assert type(stem).__name__ == "ImageNetStem" and stem.size == (16, 16)
    torch.testing.assert_close(stem.mean.flatten(), torch.tensor([0.4, 0.5, 0.6]))
    assert trunk(stem(torch.rand(2, 1, 8, 8))).shape == (2, 32)
    # pretrained=True loads the saved weights; False is a fresh init of the same architecture
    again = create_trunk(name)
    fresh = create_trunk(name, pretrained=False)
    key = "model.embeddings.patch_embeddings.projection.weight"
    assert torch.equal(again.state_dict()[key], trunk.state_dict()[key])
    assert not torch.equal(fresh.state_dict()[key], trunk.state_dict()[key])


def test_cnn_vision_models_read_the_last_stage_width(tmp_path):
    conv = transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
    transformers.ConvNextModel(conv).save_pretrained(tmp_path / "convnext")
    res = transformers.ResNetConfig(hidden_sizes=[8, 12], depths=[1, 1], embedding_size=8)
    transformers.ResNetModel(res).save_pretrained(tmp_path / "resnet")
    for folder, width in (("convnext", 16), ("resnet", 12)):
        trunk = create_trunk(f"hf:{tmp_path / folder}").eval()
        assert (trunk.input_kind, trunk.out_dim) == ("image", width)
        with torch.no_grad():
            assert trunk(torch.rand(2, 3, 32, 32)).shape == (2, width)
    # no processor file: the config's image size and a pretrained RGB trunk's statistics
    config = trunk_input_config(f"hf:{tmp_path / 'convnext'}")
    assert config.size == (224, 224) and config.statistics() is not None


def test_text_model_is_a_tokens_trunk_with_its_tokenizer(tmp_path):
    from tlroutes.backbones.pretrained.hf_named import hf_tokenizer_for

    folder = tiny_bert(tmp_path / "bert")
    trunk = create_trunk(f"hf:{folder}").eval()
    assert (trunk.input_kind, trunk.in_width, trunk.out_dim) == ("tokens", 32, 32)
    ids = hf_tokenizer_for(f"hf:{folder}")(["the movie was good", "bad plot"], 8)
    assert ids.shape == (2, 8) and ids.dtype == torch.long
    assert ids[1, 0].item() == 2 and ids[1, 4:].eq(0).all()  # [CLS] first, padded with [PAD]
    with torch.no_grad():
        assert trunk(ids).shape == (2, 32)


def test_cached_hub_repository_is_found_offline(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = cache / "models--tiny-org--tiny-vit" / "snapshots" / "0123abc"
    tiny_vit(snapshot)
    (cache / "models--tiny-org--tiny-vit" / "refs").mkdir()
    (cache / "models--tiny-org--tiny-vit" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    trunk = create_trunk("hf:tiny-org/tiny-vit")
    assert trunk.out_dim == 32 and trunk_input_config("hf:tiny-org/tiny-vit").size == (16, 16)
    with pytest.raises(ConfigError, match="Did you mean 'tiny-org/tiny-vit'.*download: true"):
        create_trunk("hf:tiny-org/tiny-vitt")


def test_bad_hf_names_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    tiny_vit(tmp_path / "vit")
    with pytest.raises(ConfigError, match=r"no model folder .*Did you mean '.*vit'"):
        create_trunk(f"hf:{tmp_path / 'vitt'}")
    with pytest.raises(ConfigError, match="needs a folder or a hub id"):
        create_trunk("hf:")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        create_trunk(f"hf:{tmp_path / 'empty'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id that cannot be fetched: said at once
    with pytest.raises(ConfigError, match="no repository 'nobody/nothing'"):
        create_trunk("hf:nobody/nothing", download=True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ConfigError, match="download: true"):  # not cached, download not allowed
        create_trunk("hf:nobody/nothing")
    with pytest.raises(ConfigError, match="no argument 'pools'"):
        create_trunk(f"hf:{tmp_path / 'vit'}", pools="cls")
    with pytest.raises(ConfigError, match="hf:<folder or hub id>"):
        create_trunk("vit")


def _run(tmp_path, run: dict, name: str) -> dict:
    from typer.testing import CliRunner

    from tlroutes.cli import app

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(run))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / name / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_local_vision_and_text_models_run_task_adaptation(tmp_path):
    """A local ViT (images) and a local BERT (a CSV's text column, its own tokenizer) through
    Task Adaptation from run files."""
    import pandas as pd

    small = {"epochs": 1, "batch_size": 32}
    vit = tiny_vit(tmp_path / "vit")
    vision = {
        "route": "task_adaptation", "seed": 0,
        "source": {"dataset": "digits", "task": "digit", "n": 200},
        "target": {"dataset": "digits", "task": "properties", "n": 120},
        "model": {"trunk": f"hf:{vit}"},
        "source_training": small, "target_training": small,
    }
    summary = _run(tmp_path, vision, "vit")
    assert summary["route"] == "task_adaptation" and "f1" in summary["metrics"]
    saved = yaml.safe_load((tmp_path / "vit" / "run.yaml").read_text())
    assert saved["model"]["trunk"] == f"hf:{vit}"

    bert = tiny_bert(tmp_path / "bert")
    gen = torch.Generator().manual_seed(0)
    texts, moods, lengths = [], [], []
    for _ in range(120):
        k = int(torch.randint(3, 7, (1,), generator=gen))
        words = [WORDS[int(i)] for i in torch.randint(0, len(WORDS), (k,), generator=gen)]
        texts.append(" ".join(words))
        moods.append("pos" if sum(w in WORDS[:3] for w in words) >= sum(
            w in WORDS[3:6] for w in words) else "neg")
        lengths.append(float(k))
    pd.DataFrame({"text": texts, "label": moods}).to_csv(tmp_path / "mood.csv", index=False)
    pd.DataFrame({"text": texts, "label": lengths}).to_csv(tmp_path / "length.csv", index=False)
    text = {
        "route": "task_adaptation", "seed": 0,
        "source": {"dataset": str(tmp_path / "mood.csv"), "text": "text", "text_length": 8,
                   "domain": "reviews"},
        "target": {"dataset": str(tmp_path / "length.csv"), "text": "text", "text_length": 8,
                   "task": "regression", "domain": "reviews"},
        "model": {"trunk": f"hf:{bert}"},
        "source_training": small, "target_training": small,
    }
    summary = _run(tmp_path, text, "bert")
    assert summary["route"] == "task_adaptation" and "mae" in summary["metrics"]
