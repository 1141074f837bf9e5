"""Statistics over data no single process sees: every torchrun rank collects on its own shard
of the digits, the float64 sufficient statistics are all-reduced exactly, and every rank
holds the statistics of all the data.

    torchrun --nproc-per-node 2 examples/distributed_collect.py

Rank 0 then checks the result against one process collecting over all the data and prints
the largest difference per group (float64 rounding, ~1e-15), and uses the statistics the
way one process would: activation matching of two networks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import cipm
from cipm.alignment.activation import matching_from_statistics
from cipm.examples import catalog
from cipm.examples.data import digits


def main() -> None:
    dist.init_process_group("gloo")  # torchrun sets rank, world size and the rendezvous
    rank, world = dist.get_rank(), dist.get_world_size()
    train, _ = digits(batch=64)
    inputs = [x.double() for x, _ in train]
    shard = inputs[rank::world]
    torch.manual_seed(0)
    model_a = catalog.mlp(depth=2, width=64, d_in=64, d_out=10)[0].double()
    torch.manual_seed(1)
    model_b = catalog.mlp(depth=2, width=64, d_in=64, d_out=10)[0].double()
    graph = cipm.trace(model_a, inputs[0])
    world_group = dist.group.WORLD
    stats = cipm.collect(
        model_a, graph, shard, config=cipm.CollectConfig(progress=False)
    ).all_reduce(world_group)
    cross = cipm.collect_cross(
        model_a, model_b, graph, shard, config=cipm.CollectConfig(progress=False)
    ).all_reduce(world_group)
    if rank == 0:
        alone = cipm.collect(model_a, graph, inputs, config=cipm.CollectConfig(progress=False))
        print(f"{world} ranks, {len(shard)} of {len(inputs)} batches on rank 0")
        for name in stats:
            diff = (stats[name].cov - alone[name].cov).abs().max()
            print(
                f"{name}: {stats[name].count} samples (one process: {alone[name].count}), "
                f"max |cov difference| {float(diff):.1e}"
            )
        cross_alone = cipm.collect_cross(
            model_a, model_b, graph, inputs, config=cipm.CollectConfig(progress=False)
        )
        for name in cross:
            diff = (cross.corr(name) - cross_alone.corr(name)).abs().max()
            print(f"{name}: max |cross-correlation difference| {float(diff):.1e}")
        state_a, state_b = model_a.state_dict(), model_b.state_dict()
        perm = matching_from_statistics(state_a, state_b, cross, cipm.AlignConfig())
        one = cipm.align(model_a, model_b, graph, method="activation", data=inputs)
        print(f"activation matching from the reduced statistics = one process's: {perm == one}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
