"""flowse: flow-matching speech enhancement post-trained with online GRPO.

Conventions used across the package:
- audio: float32 mono waveforms at 16 kHz (``flowse.features.audio.SAMPLE_RATE``), range [-1, 1];
- mel features: ``[batch, frames, n_mels]`` tensors (Kaldi ark rows are frames);
- flow time: t runs 0 (Gaussian noise) -> 1 (clean mel), the paper's SE convention.
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: importing flowse must not import torch models
    if name == "Enhancer":
        from flowse.enhance import Enhancer

        return Enhancer
    raise AttributeError(name)
