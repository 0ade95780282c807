"""DDP on CPU: two gloo processes train the toy model and end with identical weights."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, dump: str, exp: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from test_pretrain_train import _cfg

    from flowse.train.pretrain import run_pretrain
    from flowse.utils.distributed import cleanup, init_distributed

    dist = init_distributed("cpu")
    cfg = _cfg()
    model = run_pretrain(cfg, dump, exp, None, dist=dist)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, os.path.join(out, f"rank{rank}.pt"))
    cleanup()


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    from test_pretrain_train import make_dump

    dump = make_dump(str(tmp_path / "dump"))
    exp = str(tmp_path / "exp")
    mp.spawn(_worker, args=(2, _free_port(), dump, exp, str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    saved = torch.load(os.path.join(exp, "model.pt"), weights_only=True)["model"]
    assert all(torch.equal(saved[k], w0[k]) for k in w0)
    init = torch.load(os.path.join(exp, "checkpoint_3.pt"), weights_only=True)
    assert len(init["rng"]) == 2 and init["world_size"] == 2  # every rank's RNG state is kept
    assert not torch.equal(init["rng"][0]["torch"], init["rng"][1]["torch"])
    assert os.path.exists(os.path.join(exp, ".pretrain.done")) is False  # the marker is the bin's job


def _bin_worker(rank: int, world: int, ports: list, argvs: list, out: str) -> None:
    import time

    from flowse.bin import pretrain

    torch.set_num_threads(1)
    for port, argv in zip(ports, argvs):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
        if rank == 0:
            time.sleep(1.0)  # rank 1 reads the old marker first: it must not clear it under rank 0
        assert pretrain.main(argv) == 0


@pytest.mark.slow
@pytest.mark.timeout(180)  # ranks that disagree hang in a collective
def test_two_ranks_agree_to_retrain_after_a_config_change(tmp_path):
    """The bin's skip/redo/resume decision is taken by every rank from the same state: a config edited
    in place retrains from step 0 on both ranks (a rank that resumed alone would leave its peer hanging)."""
    import json

    from test_pretrain_train import bin_setup

    _, exp, argv = bin_setup(tmp_path)
    mp.spawn(_bin_worker, args=(2, [_free_port()], [argv], str(tmp_path)), nprocs=2, join=True)
    os.unlink(exp / ".pretrain.started")  # an exp dir of an older flowse: only the marker tells what it holds
    mp.spawn(_bin_worker, args=(2, [_free_port()], [argv + ["--train.lr", "1e-2"]], str(tmp_path)), nprocs=2,
             join=True)
    rows = [json.loads(x) for x in open(exp / "metrics.jsonl") if "loss" in x]
    assert (rows[0]["step"], rows[0]["lr"]) == (2, pytest.approx(1e-2))
    assert os.path.exists(exp / ".pretrain.done")
    assert "train from step 0" in (exp / "train.log").read_text().split("config changed")[1]
