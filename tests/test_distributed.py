"""Statistics over torch.distributed: two gloo ranks, each collecting on its own shard, give
the statistics one process gets over all the data."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import traced

import cipm
from cipm.examples import catalog
from cipm.statistics.distributed import all_reduce_moments
from cipm.statistics.moments import Moments

WORLD = 2
TIMEOUT_S = 120.0


def data(name: str) -> list[torch.Tensor]:
    """Uneven batches: rank 0 gets batches 0 and 2, rank 1 batch 1 (of another size)."""
    _, x = catalog.build(name)
    gen = torch.Generator().manual_seed(7)
    sizes = (x.shape[0], x.shape[0] + 3, 2)
    return [torch.randn((n, *x.shape[1:]), generator=gen).double() for n in sizes]


def _flat(stats: cipm.Statistics | cipm.CrossStatistics) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name in stats:
        s = stats[name]
        parts = {"a": s.a, "b": s.b} if isinstance(s, cipm.statistics.CrossMoments) else {}
        if isinstance(s, cipm.GroupStatistics):
            parts = {"": s.moments}
        for side, m in parts.items():
            out[f"{name}/{side}count"] = torch.tensor(m.count)
            out[f"{name}/{side}mean"] = m.mean
            out[f"{name}/{side}comoment"] = m.comoment
        if isinstance(s, cipm.statistics.CrossMoments):
            out[f"{name}/cross"] = s.cross
    return out


def _worker(rank: int, folder: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD
    )
    try:
        probe = torch.ones(1)
        dist.all_reduce(probe)
        Path(folder, f"ready{rank}").write_text(str(float(probe)))
        group = dist.group.WORLD
        results: dict[str, torch.Tensor] = {}
        for name in ("mlp", "cnn_bn"):
            model, graph = catalog.build(name)[0].double(), traced(name)
            shard = data(name)[rank::WORLD]
            stats = cipm.collect(
                model, graph, shard, config=cipm.CollectConfig(progress=False)
            ).all_reduce(group)
            results |= {f"{name}/{k}": v for k, v in _flat(stats).items()}
            other = catalog.build(name, seed=1)[0].double()
            cross = cipm.collect_cross(
                model, other, graph, shard, config=cipm.CollectConfig(progress=False)
            ).all_reduce(group)
            results |= {f"{name}/cross/{k}": v for k, v in _flat(cross).items()}
        # ranks that disagree on what they reduce are told so, not left hanging
        mine = [Moments.of(torch.randn(5, 3, dtype=torch.float64))] * (1 + rank)
        try:
            all_reduce_moments(mine, group)
        except cipm.CipmError as e:
            Path(folder, f"mismatch{rank}").write_text(str(e))
        torch.save(results, Path(folder, f"rank{rank}.pt"))
        # the same architecture with other weights on each rank: refused on every rank
        mlp, graph = catalog.build("mlp", seed=rank)[0].double(), traced("mlp")
        config = cipm.CollectConfig(progress=False)
        try:
            cipm.collect(mlp, graph, data("mlp")[rank::WORLD], config=config).all_reduce(group)
        except cipm.CipmError as e:
            Path(folder, f"weights{rank}").write_text(str(e))
        # the last: rank 1's shard is empty, its collect fails and it leaves; rank 0, in the
        # all-reduce, is told so (gloo's "Connection closed" was all it got)
        mlp = catalog.build("mlp")[0].double()
        shard = data("mlp")[rank::WORLD] if rank == 0 else []
        try:
            cipm.collect(mlp, graph, shard, config=config).all_reduce(group)
        except cipm.CipmError as e:
            Path(folder, f"empty{rank}").write_text(str(e))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, torch.Tensor]]]:
    """Run both ranks once (about 5 s), under a timeout; their results and their folder."""
    folder = tmp_path_factory.mktemp("gloo")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    context = mp.start_processes(
        _worker, args=(str(folder),), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.terminate()
            ready = all(Path(folder, f"ready{r}").exists() for r in range(WORLD))
            if not ready:
                pytest.skip("two gloo ranks could not meet on loopback within the timeout")
            pytest.fail(f"the ranks met but did not finish within {TIMEOUT_S} s")
    return folder, [torch.load(Path(folder, f"rank{r}.pt")) for r in range(WORLD)]


def _single(name: str) -> dict[str, torch.Tensor]:
    model, graph = catalog.build(name)[0].double(), traced(name)
    loader = data(name)
    stats = cipm.collect(model, graph, loader, config=cipm.CollectConfig(progress=False))
    out = {f"{name}/{k}": v for k, v in _flat(stats).items()}
    other = catalog.build(name, seed=1)[0].double()
    cross = cipm.collect_cross(
        model, other, graph, loader, config=cipm.CollectConfig(progress=False)
    )
    return out | {f"{name}/cross/{k}": v for k, v in _flat(cross).items()}


@pytest.mark.parametrize("name", ["mlp", "cnn_bn"])
def test_two_ranks_equal_one_process(
    ranks: tuple[Path, list[dict[str, torch.Tensor]]], name: str
) -> None:
    _, results = ranks
    whole = _single(name)
    assert whole and set(whole) <= set(results[0])
    for key, expected in whole.items():
        for rank in range(WORLD):
            got = results[rank][key]
            if key.endswith("count"):
                assert int(got) == int(expected), key
            else:
                scale = max(float(expected.abs().max()), 1.0)
                assert float((got - expected).abs().max()) <= 1e-12 * scale, key
    # every rank holds the same bytes
    assert all(torch.equal(results[0][k], results[1][k]) for k in whole)


def test_shards_alone_differ_from_the_whole(
    ranks: tuple[Path, list[dict[str, torch.Tensor]]],
) -> None:
    """The reduction is doing the work: one rank's shard alone is not the whole."""
    model, graph = catalog.build("mlp")[0].double(), traced("mlp")
    shard = cipm.collect(
        model, graph, data("mlp")[::WORLD], config=cipm.CollectConfig(progress=False)
    )
    whole = _single("mlp")
    name = next(iter(shard))
    assert shard[name].count < int(whole[f"mlp/{name}/count"])
    assert not torch.allclose(shard[name].moments.comoment, whole[f"mlp/{name}/comoment"])


def test_mismatched_ranks_are_an_error(ranks: tuple[Path, list[dict[str, torch.Tensor]]]) -> None:
    folder, _ = ranks
    for rank in range(WORLD):
        message = Path(folder, f"mismatch{rank}").read_text()
        assert "every rank must collect with the same model" in message


def test_ranks_with_other_weights_are_an_error(
    ranks: tuple[Path, list[dict[str, torch.Tensor]]],
) -> None:
    folder, _ = ranks
    for rank in range(WORLD):
        assert "models have other weights" in Path(folder, f"weights{rank}").read_text()


def test_an_empty_shard_is_an_error_on_every_rank(
    ranks: tuple[Path, list[dict[str, torch.Tensor]]],
) -> None:
    folder, _ = ranks
    assert "no batches" in Path(folder, "empty1").read_text()
    assert "another rank stopped before it" in Path(folder, "empty0").read_text()


def test_without_a_process_group_initialized() -> None:
    model, graph = catalog.build("mlp")[0].double(), traced("mlp")
    stats = cipm.collect(model, graph, data("mlp"), config=cipm.CollectConfig(progress=False))
    with pytest.raises(cipm.CipmError, match="init_process_group"):
        stats.all_reduce(None)
