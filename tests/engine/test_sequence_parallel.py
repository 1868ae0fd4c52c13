"""Ulysses sequence parallelism on CPU (gloo): the split/pad/gather math, the all-to-all, and the DiT itself.

The multi-process tests spawn 2 and 4 ranks once per world size (``torch.multiprocessing``, file:// rendezvous) on
a tiny random DiT with 4 heads; every rank computes the single-process output first, installs sequence
parallelism and runs the same inputs again. Cases: a token count that divides the world (frame runs crossing
rank boundaries) and two that need padding (for 4 ranks one rank holds only padding).
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from engine.models.audio_attention import SeqShard
from engine.models.transformer import DiTConfig, WanAudioTransformer
from engine.parallel.all_to_all import (
    gather_sequence,
    heads_to_sequence,
    sequence_to_heads,
)
from engine.parallel.mesh import (
    ParallelContext,
    destroy_parallel,
    init_parallel,
    ulysses_degree_for,
)
from engine.parallel.sequence import (
    gather_shards,
    pad_sequence,
    padded_length,
    shard_for,
    split_sequence,
)
from engine.parallel.usp import (
    SequenceParallel,
    apply_sequence_parallel,
    remove_sequence_parallel,
)

TINY = {
    "model_type": "i2v", "dim": 32, "ffn_dim": 64, "num_heads": 4, "num_layers": 2, "text_len": 8, "text_dim": 16,
    "in_dim": 36, "out_dim": 16, "intermediate_dim": 8, "output_dim": 16, "context_tokens": 4,
}
#: name -> (batch, latent frames, latent height, latent width); tokens = frames * h/2 * w/2.
CASES = {
    "even": (2, 3, 4, 4),  # 12 tokens, 4 per frame: divides 2 and 4, ranks cut frames in the middle
    "padded": (1, 3, 6, 2),  # 9 tokens, 3 per frame: padded to 10 / 12 (4 ranks: rank 3 holds only padding)
    "padded_wide": (2, 3, 4, 6),  # 18 tokens, 6 per frame: padded to 20 for 4 ranks
}
REL_TOL = 1e-5


def _tokens(case: str) -> int:
    _, frames, h, w = CASES[case]
    return frames * (h // 2) * (w // 2)


def _tokens_per_frame(case: str) -> int:
    _, _, h, w = CASES[case]
    return (h // 2) * (w // 2)


def _model() -> WanAudioTransformer:
    torch.manual_seed(0)
    return WanAudioTransformer(DiTConfig(**TINY)).eval()


def _inputs(case: str) -> tuple[torch.Tensor, ...]:
    batch, frames, h, w = CASES[case]
    g = torch.Generator().manual_seed(sum(map(ord, case)))
    x = torch.randn(batch, 16, frames, h, w, generator=g)
    t = torch.linspace(300.0, 900.0, batch)
    context = torch.randn(batch, 5, TINY["text_dim"], generator=g)
    clip = torch.randn(batch, 257, 1280, generator=g)
    y = torch.randn(batch, 20, frames, h, w, generator=g)
    audio = torch.randn(batch, 1 + 4 * (frames - 1), 5, 12, 768, generator=g)
    return x, t, context, clip, y, audio


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


# -- pure math -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("total", "world", "expected"), [(12, 2, 12), (12, 4, 12), (9, 2, 10), (9, 4, 12), (1, 8, 8)])
def test_padded_length(total: int, world: int, expected: int) -> None:
    assert padded_length(total, world) == expected


def test_shards_tile_the_padded_sequence() -> None:
    for total, world in [(12096, 8), (10530, 8), (9, 4), (5, 4)]:
        shards = [shard_for(r, world, total) for r in range(world)]
        assert shards[0].start == 0 and shards[-1].stop == padded_length(total, world)
        assert all(a.stop == b.start for a, b in itertools.pairwise(shards))
        assert len({s.stop - s.start for s in shards}) == 1
    assert shard_for(3, 8, 12096) == SeqShard(4536, 6048)  # 1,512 tokens per rank on 8 GPUs (SPEC §7.2)
    with pytest.raises(ValueError):
        shard_for(4, 4, 12)


def test_pad_split_gather_round_trip() -> None:
    x = torch.randn(2, 9, 3, 5)
    padded = pad_sequence(x, 4)
    assert padded.shape == (2, 12, 3, 5) and torch.equal(padded[:, :9], x) and not padded[:, 9:].any()
    assert pad_sequence(x, 3) is x
    shards = [split_sequence(x, r, 4) for r in range(4)]
    assert [s.shape[1] for s in shards] == [3, 3, 3, 3] and not shards[3].any()
    assert torch.equal(gather_shards(shards, total_tokens=9), x)
    assert torch.equal(gather_shards(shards), padded)
    last = pad_sequence(torch.ones(2, 5), 4, dim=-1)
    assert last.shape == (2, 8) and last[:, 5:].sum() == 0
    with pytest.raises(ValueError):
        gather_shards([torch.zeros(1, 2), torch.zeros(1, 3)])


def test_release_frame_runs_per_rank() -> None:
    """The per-rank frame token counts the spec derives for 8 GPUs (9 frames x 1,344 tokens)."""
    runs = [shard_for(r, 8, 12096).frame_runs(1344, 9) for r in range(8)]
    assert [[run.num_tokens for run in rank] for rank in runs][:2] == [[1344, 168], [1176, 336]]
    assert [run.num_tokens for run in runs[7]] == [168, 1344]


@pytest.mark.parametrize("world", [2, 4])
def test_cases_cross_frame_boundaries(world: int) -> None:
    """Guard the cases themselves: a rank boundary falls inside a frame, and padding is exercised."""
    tpf, total = _tokens_per_frame("even"), _tokens("even")
    shards = [shard_for(r, world, total) for r in range(world)]
    assert any(s.start % tpf for s in shards[1:]), f"'even' on {world} ranks never cuts a frame"
    assert any(len(s.frame_runs(tpf, total // tpf)) > 1 for s in shards)
    assert padded_length(_tokens("padded"), world) > _tokens("padded")
    assert padded_length(_tokens("padded"), 4) - _tokens("padded") == 3  # rank 3 of 4 holds only padding


@pytest.mark.parametrize(("world", "heads", "expected"), [(1, 40, 1), (2, 40, 2), (3, 40, 1), (6, 40, 2),
                                                          (8, 40, 8), (16, 40, 8), (4, 4, 4)])
def test_ulysses_degree_gcd_rule(world: int, heads: int, expected: int) -> None:
    assert ulysses_degree_for(world, heads) == expected


def test_init_parallel_refuses_bad_degrees_and_timeouts_before_joining() -> None:
    with pytest.raises(ValueError, match="must equal world_size"):
        init_parallel(6, 0, num_heads=40, ulysses_degree=4)
    with pytest.raises(ValueError, match="timeout_s"):
        init_parallel(1, 0, timeout_s=0)
    ctx = init_parallel(1, 0, num_heads=40)
    assert (ctx.world_size, ctx.ulysses_degree, ctx.ring_degree, ctx.group) == (1, 1, 1, None)


def test_collectives_are_identity_in_one_process() -> None:
    x = torch.randn(1, 6, 4, 8)
    assert sequence_to_heads(x) is x and heads_to_sequence(x) is x and gather_sequence(x) is x


def test_degree_one_is_bit_identical_and_removable() -> None:
    model = _model()
    inputs = _inputs("padded")
    with torch.no_grad():
        ref = model(*inputs)
        apply_sequence_parallel(model, ParallelContext.single())
        assert model.parallel is not None and model.blocks[0].self_attn.attention_fn is not None
        out = model(*inputs)
        remove_sequence_parallel(model)
        again = model(*inputs)
    assert torch.equal(out, ref) and torch.equal(again, ref)


def test_heads_must_divide_the_degree() -> None:
    ctx = ParallelContext(rank=0, world_size=3, ulysses_degree=3, ring_degree=1, group=None, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="does not divide"):
        apply_sequence_parallel(_model(), ctx)


# -- multi-process (gloo) --------------------------------------------------------------------------------------
class _UnmaskedPadding(SequenceParallel):
    """The release's behaviour: padded keys take part in self-attention (control: must differ when padded)."""

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, SeqShard]:
        local, shard = super().split(tokens)
        self._num_tokens = padded_length(tokens.shape[1], self.ctx.ulysses_degree)
        return local, shard


def _collectives(ctx: ParallelContext) -> dict[str, bool]:
    world, rank = ctx.world_size, ctx.rank
    g = torch.Generator().manual_seed(7)
    full = torch.randn(2, 3 * world, 2 * world, 5, generator=g)  # [B, P*s, H, D], H = 2P
    local = full[:, 3 * rank : 3 * (rank + 1)]
    heads = sequence_to_heads(local, ctx.group)
    head_out = full[:, :, 2 * rank : 2 * (rank + 1)]
    return {
        "seq_to_heads": torch.equal(heads, head_out),
        "heads_to_seq": torch.equal(heads_to_sequence(head_out.contiguous(), ctx.group), local),
        "gather": torch.equal(gather_sequence(local, ctx.group), full),
    }


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    ctx = init_parallel(world, rank, "gloo", f"file://{init_file}", timeout_s=60.0, num_heads=TINY["num_heads"])
    try:
        result: dict[str, object] = {"collectives": _collectives(ctx)}
        model = _model()
        with torch.no_grad():
            refs = {case: model(*_inputs(case)) for case in CASES}
            parallel = apply_sequence_parallel(model, ctx)
            local_tokens: list[int] = []
            split = parallel.split
            parallel.split = lambda tokens: _record(split(tokens), local_tokens)  # type: ignore[method-assign]
            outs = {case: model(*_inputs(case)) for case in CASES}
            unmasked = _UnmaskedPadding(ctx)
            model.parallel = unmasked
            for block in model.blocks:
                block.self_attn.attention_fn = unmasked.self_attention
            release_like = model(*_inputs("padded"))
        result.update(refs=refs, outs=outs, local_tokens=local_tokens, release_like=release_like)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        destroy_parallel(ctx)


def _record(split: tuple[torch.Tensor, SeqShard], sink: list[int]) -> tuple[torch.Tensor, SeqShard]:
    sink.append(split[0].shape[1])
    return split


_RESULTS: dict[int, list[dict]] = {}


def _run(world: int, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if world not in _RESULTS:
        folder = tmp_path_factory.mktemp(f"sp{world}")
        mp.spawn(_worker, args=(world, str(folder / "rendezvous"), str(folder)), nprocs=world, join=True)
        _RESULTS[world] = [torch.load(folder / f"rank{r}.pt") for r in range(world)]
    return _RESULTS[world]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 4])
def test_all_to_all_matches_local_reference(world: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    for rank, result in enumerate(_run(world, tmp_path_factory)):
        assert result["collectives"] == {"seq_to_heads": True, "heads_to_seq": True, "gather": True}, rank


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("case", list(CASES))
def test_sequence_parallel_matches_single_process(
    world: int, case: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    results = _run(world, tmp_path_factory)
    for rank, result in enumerate(results):
        ref, out = result["refs"][case], result["outs"][case]
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert _rel_err(out, ref) <= REL_TOL, f"rank {rank}: relative error {_rel_err(out, ref):.2e}"
        assert torch.equal(out, results[0]["outs"][case]), f"rank {rank} disagrees with rank 0"
    index = list(CASES).index(case)
    assert results[0]["local_tokens"][index] == math.ceil(_tokens(case) / world)  # the work really was split


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 4])
def test_unmasked_padding_would_differ(world: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Control: with the release's unmasked padded keys the padded case is off, so the equivalence test can fail."""
    result = _run(world, tmp_path_factory)[0]
    assert _rel_err(result["release_like"], result["refs"]["padded"]) > 100 * REL_TOL
