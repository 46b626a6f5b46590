"""Admin's profile file is written by rank 0 of a real torch.distributed group only.

Two processes join a gloo group on 127.0.0.1 (as fairseq's distributed_main does before it builds the model)
and build the Admin model through fairseq-train's parser, each told to write its profile to its own file.
The model's args keep ``distributed_rank = 0`` on both ranks (fairseq sets the real rank in
``cfg.distributed_training``, not in the parse-time copy the model gets), which is why the scheme asks
torch.distributed: only rank 0's file may appear.
"""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from normpos.fairseq_build import build_task_and_model

TINY = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
        "--encoder-layers", "2", "--decoder-layers", "2", "--max-tokens", "500"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_on_rank(rank, world_size, init_method, data_dir, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, world_size=world_size, rank=rank)
    try:
        cfg, _, _ = build_task_and_model(data_dir, "--arch", "normpos_iwslt_de_en_admin", *TINY,
                                         "--admin-profile", str(out_dir / f"rank{rank}.json"))
        assert dist.get_rank() == rank
        assert getattr(cfg.model, "distributed_rank", 0) == 0  # what the model's args say on every rank
        dist.barrier()  # both have built (and rank 0 has written) before either leaves the group
    finally:
        dist.destroy_process_group()


def test_only_rank_0_writes_the_profile(tiny_bin, tmp_path):
    world_size = 2
    mp.spawn(build_on_rank, args=(world_size, f"tcp://127.0.0.1:{free_port()}", tiny_bin, tmp_path),
             nprocs=world_size, join=True)
    assert (tmp_path / "rank0.json").is_file()
    assert not (tmp_path / "rank1.json").exists()
