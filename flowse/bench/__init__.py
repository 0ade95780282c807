"""Benchmarks and diagnostics, each ``python -m flowse.bench.<name> --help``:

- ``model``: DiT forward/sampling/training speed (RTF, audio-s/s, steps/s, peak memory);
- ``metrics``: metric speed and agreement with the reference packages;
- ``vocoder``: real-time factor of HiFT (CosyVoice2 size) and HiFi-GAN V1, batch 1 and 4;
- ``grpo``: one GRPO iteration timed by part (rollout, vocoder, reward, update) and a paper-size projection;
- ``grpo_snr``: signal share of the GRPO policy gradient at a model;
- ``compare_grpo``: paired per-iteration comparison of two GRPO runs of the same seed;
- ``fig2``: the paper's Fig. 2 (every metric vs step, one curve per GRPO run) and held-out paired changes;
- ``model_info``: parameter counts of a pretrain config.
"""
