"""The training frame with a toy task: a run interrupted by ``stop_at`` and resumed in a new trainer ends
bit-exactly where one uninterrupted run does (weights, optimizer, RNG-driven data, logs)."""
import json

import torch

from flowse.train.config import TrainConfig
from flowse.train.schedule import make_optimizer, make_scheduler
from flowse.train.task import StepOutput, TrainTask
from flowse.train.trainer import Trainer


class _Count:
    def __init__(self):
        self.units = 0

    def state_dict(self):
        return {"units": self.units}

    def load_state_dict(self, state):
        self.units = int(state["units"])


class ToyTask(TrainTask):
    """Two optimizer steps per unit (like a GRPO iteration) on batches drawn from the global torch RNG
    (so a resume is exact only when the frame restores the RNG state)."""

    name = "toy"

    def __init__(self, cfg: TrainConfig):
        torch.manual_seed(0)
        self.cfg = cfg
        self.model = torch.nn.Linear(3, 2)
        self.optimizer = make_optimizer(self.model.parameters(), cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.count = _Count()

    def state_items(self):
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler, "count": self.count}

    def train_step(self, trainer):
        n = min(2, self.cfg.max_steps - trainer.step)
        for _ in range(n):
            x = torch.randn(4, 3)
            loss = (self.model(x) - x[:, :2].flip(1)).pow(2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
        self.count.units += 1
        return StepOutput(n, {"step": trainer.step + n, "loss": float(loss.detach()), "unit": self.count.units})

    def evaluate(self, trainer):
        return {"weight_sum": float(self.model.weight.detach().sum())}


def _cfg():
    return TrainConfig(max_steps=9, lr=1e-2, warmup_steps=2, schedule="cosine", log_interval=1, eval_interval=4,
                       ckpt_interval=4, keep_checkpoints=0, progress=False, seed=5)


def test_toy_task_resumes_bit_exactly(tmp_path):
    one = Trainer(ToyTask(_cfg()), _cfg(), str(tmp_path / "one"))
    one.fit(resume=False)
    two_dir = str(tmp_path / "two")
    first = Trainer(ToyTask(_cfg()), _cfg(), two_dir)
    first.fit(resume=False, stop_at=4)
    assert first.step == 4 and (tmp_path / "two" / "checkpoint_4.pt").exists()
    torch.randn(100)  # a new process would not share the RNG state: the checkpoint must restore it
    again = Trainer(ToyTask(_cfg()), _cfg(), two_dir)
    again.fit(resume=True)
    assert again.step == one.step == 9 and again.task.count.units == one.task.count.units == 5
    for k, v in one.task.model.state_dict().items():
        assert torch.equal(again.task.model.state_dict()[k], v), k
    assert again.task.scheduler.get_last_lr() == one.task.scheduler.get_last_lr()
    rows = [json.loads(x) for x in open(tmp_path / "two" / "metrics.jsonl")]
    assert rows == [json.loads(x) for x in open(tmp_path / "one" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 9]
    evals = [json.loads(x) for x in open(tmp_path / "two" / "eval.jsonl")]
    assert [e["step"] for e in evals] == [4, 8, 9] and evals == one.eval_history
    assert sorted(p.name for p in (tmp_path / "two").glob("checkpoint_*.pt")) == \
        ["checkpoint_4.pt", "checkpoint_8.pt", "checkpoint_9.pt"]


def test_fresh_start_and_in_memory_runs(tmp_path):
    Trainer(ToyTask(_cfg()), _cfg(), str(tmp_path)).fit(resume=False, stop_at=4)
    fresh = Trainer(ToyTask(_cfg()), _cfg(), str(tmp_path))
    fresh.fit(resume=False, stop_at=2)  # the old checkpoint_4 and logs are gone: nothing to resume wrongly
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pt")) == ["checkpoint_2.pt"]
    assert [json.loads(x)["step"] for x in open(tmp_path / "metrics.jsonl")] == [2]
    mem = Trainer(ToyTask(_cfg()), _cfg(), None)
    mem.fit()
    disk = Trainer(ToyTask(_cfg()), _cfg(), str(tmp_path / "disk"))
    disk.fit()
    assert torch.equal(mem.task.model.weight, disk.task.model.weight) and mem.history == disk.history
