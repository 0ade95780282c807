"""flowse: flow-matching speech enhancement post-trained with online GRPO."""
from setuptools import find_packages, setup

setup(
    name="flowse",
    version="0.1.0",
    description="Flow-matching speech enhancement with online GRPO post-training (FlowSE-GRPO)",
    packages=find_packages(include=["flowse", "flowse.*"]),
    package_data={"flowse": ["data/sentences/*.txt"]},
    python_requires=">=3.10",
    install_requires=[
        # torch/torchaudio are pinned together: torchaudio pins an exact torch.
        "torch==2.11.0",
        "torchaudio==2.11.0",
        "numpy",
        "scipy",
        "soundfile",
        "pyroomacoustics",
        "peft",
        "onnxruntime",
        "onnx",  # DNSMOS: cuts sig_bak_ovr.onnx into trunk + head to share overlapping windows; vocoder ONNX export
        "pyyaml",
        "kaldiio",
        "pesq",
        "pystoi",
        "tqdm",
        "matplotlib",
        "faster-whisper==1.2.1",  # WER/CER metric (Whisper through CTranslate2)
        "jiwer==4.0.0",  # edit distances of WER/CER
    ],
    extras_require={
        # librosa/webrtcvad only to compare against the reference implementations
        # (speechmos, Resemblyzer) in tests and benchmarks.
        "test": ["pytest", "pytest-timeout", "librosa", "webrtcvad-wheels"],
    },
    entry_points={"console_scripts": ["flowse-enhance=flowse.bin.enhance:console_main"]},
)
