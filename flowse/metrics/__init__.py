"""Speech-quality metrics; nothing is downloaded at run time. The rewards built on them are in ``flowse.rl.reward``.

- ``registry``: every metric, ``key -> "module:attribute"`` of its declaration (outputs,
  reference, config section, reward scale, RESULTS column, availability, scorer);
- ``dnsmos`` (+ ``dnsmos_trunk``): DNSMOS P.835 SIG/BAK/OVRL and P.808 (speechmos's ONNX models,
  reference-exact, batched);
- ``speaker``: SPK, cosine of GE2E (Resemblyzer weights) or ONNX speaker-model embeddings;
- ``speechbertscore``: SBS from a local HuggingFace SSL model (n/a without one);
- ``intrusive``: PESQ-WB, ESTOI, SI-SDR;
- ``suite``: the registered metrics behind ``MetricSuite(metrics, models).compute(est, ref)``;
- ``scoring``, ``outcome``, ``results``: scoring of lists into files (``score_set``) and RESULTS.md.
Config schemas (``score.yaml``, the ``models`` sections) are in ``config``.
"""
