"""Training infrastructure: a generic resumable DDP trainer, LR schedules, EMA, curve plots,
and the flow-matching pretraining driver (stage 4)."""
