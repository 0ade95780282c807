"""Speaker similarity: GE2E re-implementation against Resemblyzer, and the ONNX speaker-model path."""
import numpy as np
import pytest
import torch

from signals import speechlike
from flowse.metrics.speaker import (
    SpeakerConfig,
    OnnxEmbedder, SpeakerSimilarity, cosine_rows, normalize_volume, partial_slices, trim_long_silences,
)


@pytest.fixture(scope="module")
def resemblyzer():
    try:
        import resemblyzer
        from resemblyzer import VoiceEncoder
    except Exception as e:  # noqa: BLE001 - any import failure means no reference to compare with
        pytest.skip(f"Resemblyzer reference not importable ({e!r})")
    return resemblyzer, VoiceEncoder("cpu", verbose=False)


@pytest.fixture(scope="module")
def spk():
    return SpeakerSimilarity(SpeakerConfig())


def test_partial_slices_equal_reference(resemblyzer):
    _, enc = resemblyzer
    for n in [100, 8000, 16000, 25600, 26000, 40000, 123457, 320000]:
        for rate, cov in [(1.3, 0.75), (2.0, 0.5)]:
            _, mel_slices = enc.compute_partial_slices(n, rate, cov)
            assert partial_slices(n, rate, cov) == [(s.start, s.stop) for s in mel_slices]


def test_preprocessing_equal_reference(resemblyzer):
    mod, _ = resemblyzer
    x = np.concatenate([speechlike(1.5, gain=0.01), np.zeros(16000, np.float32), speechlike(1.0, seed=2, gain=0.01)])
    np.testing.assert_allclose(normalize_volume(x), mod.audio.normalize_volume(x, -30, increase_only=True), rtol=1e-6)
    loud = speechlike(1.0, gain=0.5)
    np.testing.assert_array_equal(normalize_volume(loud), loud)  # increase only
    y = normalize_volume(x)
    np.testing.assert_array_equal(trim_long_silences(y), mod.audio.trim_long_silences(y))
    assert len(trim_long_silences(y)) < len(y)  # the 1 s pause was shortened


def test_embeddings_equal_resemblyzer(resemblyzer, spk):
    _, enc = resemblyzer
    wavs = [normalize_volume(speechlike(s, f0, seed=i)) for i, (s, f0) in
            enumerate([(0.6, 110), (1.6, 200), (2.3, 150), (4.0, 100), (7.3, 240)])]
    ours = spk.embedder.embed_preprocessed(wavs)
    ref = np.stack([enc.embed_utterance(w) for w in wavs])
    cos = np.sum(ours * ref, axis=1)
    assert np.all(cos >= 0.999), cos
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_similarity_values(spk):
    a = speechlike(2.0, 110, seed=1)
    b = speechlike(2.0, 230, seed=5, noise=0.03)
    s = spk.score([a, b, a, np.zeros(16000, np.float32)], [a, a, 0.5 * a + 0.002, a])
    assert s[0] == pytest.approx(1.0, abs=1e-5)
    assert s[1] < 0.99 and s[1] < s[2]  # another voice is less similar than a scaled copy
    assert np.isnan(s[3])  # silence has no speaker embedding


def test_cosine_rows():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0]])
    out = cosine_rows(a, b)
    np.testing.assert_allclose(out[:2], [0.0, 1.0], atol=1e-12)
    assert np.isnan(out[2])


class _TinySpeakerNet(torch.nn.Module):
    """Stands in for campplus.onnx: fbank [B, T, 80] -> embedding [B, 16] (mean pooling)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(80, 16)

    def forward(self, x):
        return self.proj(torch.tanh(x)).mean(dim=1)


def test_onnx_speaker_model(tmp_path):
    import torchaudio

    net = _TinySpeakerNet().eval()
    path = str(tmp_path / "spk.onnx")
    torch.onnx.export(net, (torch.randn(1, 50, 80),), path, input_names=["feats"], output_names=["emb"],
                      dynamic_axes={"feats": {0: "b", 1: "t"}}, dynamo=False)
    cfg = SpeakerConfig(onnx_path=path)
    sim = SpeakerSimilarity(cfg)
    assert isinstance(sim.embedder, OnnxEmbedder)
    wavs = [speechlike(1.3, seed=1), speechlike(2.1, 200, seed=2), speechlike(1.3, 90, seed=3)]
    emb = sim.embed(wavs)
    for w, e in zip(wavs, emb):
        f = torchaudio.compliance.kaldi.fbank(torch.from_numpy(w)[None], num_mel_bins=80, dither=0.0,
                                              sample_frequency=16000)
        with torch.no_grad():
            want = net((f - f.mean(dim=0, keepdim=True))[None])[0].numpy()
        np.testing.assert_allclose(e, want, atol=1e-5)
    s = sim.score(wavs, [wavs[0], wavs[0], wavs[2]])
    assert s[0] == pytest.approx(1.0, abs=1e-6) and s[2] == pytest.approx(1.0, abs=1e-6)
    assert s[1] < 0.9999
    with pytest.raises(FileNotFoundError, match="onnx_path"):
        SpeakerSimilarity(SpeakerConfig(onnx_path=str(tmp_path / "missing.onnx")))
