"""Training: the one training frame (``trainer.Trainer`` around a ``task.TrainTask``), the shared
``config.TrainConfig``, LR schedules and AdamW (``schedule``), EMA, curve plots, the stage wrapper
(``stage``), and the tasks of pretraining (``supervised`` + ``pretrain``, stage 4) and HiFi-GAN (``hifigan``,
stage 3); GRPO's task is ``flowse.rl.task``."""
