"""SpeechBERTScore: the BERTScore math on hand-made features, and loading tiny local WavLM/HuBERT dirs."""
import numpy as np
import pytest
import torch

from flowse.metrics.config import ScoreModelsConfig
from flowse.metrics.speechbertscore import SBS_HINT, SBSConfig, SpeechBERTScore, bert_score
from flowse.metrics.suite import MetricSuite


def test_bert_score_by_hand():
    gen = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    ref = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # cosine matrix rows gen, cols ref: [[1, .7071], [0, .7071], [.7071, 1]]
    p, r, f1 = bert_score(gen, ref)
    c = 1 / np.sqrt(2)
    assert p == pytest.approx((1 + c + 1) / 3, abs=1e-6)
    assert r == pytest.approx((1 + 1) / 2, abs=1e-6)
    assert f1 == pytest.approx(2 * p * r / (p + r), abs=1e-9)
    p2, r2, _ = bert_score(ref, gen)  # swapping the roles swaps precision and recall
    assert (p2, r2) == pytest.approx((r, p), abs=1e-6)


def _tiny_model_dir(tmp_path, kind: str) -> str:
    from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

    kw = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
              conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 4),
              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    if kind == "wavlm":
        model = WavLMModel(WavLMConfig(**kw, feat_extract_norm="layer", num_buckets=32, max_bucket_distance=100))
    else:
        model = HubertModel(HubertConfig(**kw, feat_extract_norm="group"))
    d = tmp_path / kind
    model.save_pretrained(str(d))
    return str(d)


def _wav(sec, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sec * 16000)) / 16000
    return (0.1 * np.sin(2 * np.pi * (150 + 30 * seed) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("kind", ["wavlm", "hubert"])
def test_local_model_equals_unbatched_reference(tmp_path, kind):
    from transformers import AutoModel

    d = _tiny_model_dir(tmp_path, kind)
    sbs = SpeechBERTScore(SBSConfig(model_dir=d, layer=2))
    est = [_wav(1.0, 1), _wav(1.0, 2), _wav(0.7, 3)]
    ref = [_wav(1.0, 0), _wav(1.0, 0), _wav(0.8, 4)]
    got = sbs.score(est, ref)
    model = AutoModel.from_pretrained(d).eval()  # the reference procedure: one utterance at a time
    for i in range(3):
        with torch.no_grad():
            fe = model(torch.from_numpy(est[i])[None], output_hidden_states=True).hidden_states[2][0]
            fr = model(torch.from_numpy(ref[i])[None], output_hidden_states=True).hidden_states[2][0]
        want = bert_score(fe, fr)
        for j, name in enumerate(["precision", "recall", "f1"]):
            assert got[name][i] == pytest.approx(want[j], abs=1e-5)
    same = sbs.score([ref[0]], [ref[0]])
    assert same["precision"][0] == pytest.approx(1.0, abs=1e-5) and same["recall"][0] == pytest.approx(1.0, abs=1e-5)
    assert got["precision"][0] < 0.9999
    np.testing.assert_allclose(SpeechBERTScore(SBSConfig(model_dir=d, layer=2, variant="recall")).sbs(est, ref),
                               got["recall"], atol=1e-6)


def test_bad_model_dir_and_layer(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        SpeechBERTScore(SBSConfig(model_dir=str(tmp_path)))
    d = _tiny_model_dir(tmp_path, "wavlm")
    with pytest.raises(ValueError, match="layer 14"):
        SpeechBERTScore(SBSConfig(model_dir=d, layer=14))


def test_no_model_is_na_with_hint():
    suite = MetricSuite(["sbs", "sisdr"], ScoreModelsConfig())
    assert suite.metrics == ["SISDR"]
    assert suite.unavailable == {"SBS": SBS_HINT}
    assert "sbs.model_dir" in SBS_HINT
