"""Speech-quality metrics and GRPO rewards; nothing is downloaded at run time.

- ``dnsmos``: DNSMOS P.835 SIG/BAK/OVRL and P.808 (speechmos's ONNX models, reference-exact, batched);
- ``speaker``: SPK, cosine of GE2E (Resemblyzer weights) or ONNX speaker-model embeddings;
- ``speechbertscore``: SBS from a local HuggingFace SSL model (n/a without one);
- ``intrusive``: PESQ-WB, ESTOI, SI-SDR;
- ``suite``: all of them behind ``MetricSuite(metrics, models).compute(est, ref)``;
- ``reward``: ``RewardConfig`` / ``RewardModel`` used by GRPO;
- ``scoring``, ``results``: the scoring CLI's files and RESULTS.md.
Config schemas (``score.yaml``) are in ``config``.
"""
