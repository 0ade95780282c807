"""AudioReward: candidates and references reach the metrics at 16 kHz whatever the vocoder's rate."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flowse.features.audio import resample
from flowse.rl.reward_fn import AudioReward


class ToneVocoder:
    """Stands in for a vocoder: every frame becomes ``hop`` samples of a 440 Hz tone at ``sample_rate``."""

    needs_noisy = False

    def __init__(self, sample_rate: int, hop: int):
        self.sample_rate, self.hop_length = sample_rate, hop

    def decode(self, mel, lengths, noisy=None):
        n = mel.shape[1] * self.hop_length
        t = torch.arange(n, dtype=torch.float64) / self.sample_rate
        return (0.1 * torch.sin(2 * np.pi * 440 * t)).float().repeat(mel.shape[0], 1)


class Recorder:
    def compute(self, est, ref):
        self.est, self.ref = est, ref
        return {"LEN": np.array([len(w) for w in est], dtype=np.float64)}

    def reward(self, metrics):
        return metrics["LEN"]


@pytest.mark.parametrize("rate,hop", [(16000, 256), (24000, 480)])
def test_audio_reward_scores_at_16k(rate, hop):
    voc, rec = ToneVocoder(rate, hop), Recorder()
    frames = [50, 40]
    ref = [np.full(f * hop, 0.05, np.float32) for f in frames]
    prompts = SimpleNamespace(lengths=torch.tensor(frames), ref_wav=ref)
    out = AudioReward(voc, rec).metrics(torch.zeros(2, 50, 80), prompts)
    want = [f * hop * 16000 // rate for f in frames]
    assert out["LEN"].tolist() == want and [len(r) for r in rec.ref] == want
    est = voc.decode(torch.zeros(1, 50, 80), None)[0].numpy()
    np.testing.assert_array_equal(rec.est[0], resample(est, rate, 16000))
    if rate == 16000:
        assert rec.ref[0] is ref[0] or np.array_equal(rec.ref[0], ref[0])
