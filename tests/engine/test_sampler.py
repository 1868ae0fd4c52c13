"""The FlashTalk sampler: timestep schedules, the x0/re-noise update against closed forms, motion
re-injection and the released noise draw order. Stand-in DiTs only (no weights)."""
from __future__ import annotations

import math

import pytest
import torch

from engine.sampler import (
    GivenNoise,
    SeededNoise,
    denoise,
    raw_timesteps,
    shifted_timesteps,
)

SHAPE = (1, 4, 5, 2, 3)  # [B, C, F, H, W]


def test_released_schedule_is_the_golden_one() -> None:
    # golden prepare__a "timesteps": shift 5 applied to [1000, 750, 500, 250, 0], float32.
    expected = torch.tensor([1000.0, 937.5, 833.3333, 625.0, 0.0], dtype=torch.float32)
    got = shifted_timesteps(4, 5.0, 1000)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)  # 833.3333 is the float32 nearest 2500/3


def test_two_step_and_linspace_schedules() -> None:
    assert raw_timesteps(2) == [1000.0, 500.0, 0.0]
    assert torch.equal(shifted_timesteps(2, 5.0), torch.tensor([1000.0, 833.3333, 0.0]))
    assert raw_timesteps(3) == [1000.0, 500.5, 1.0, 0.0]  # linspace(1000, 1, 3) + [0]
    # shift 1 is the identity (up to the float32 round trip through t / 1000)
    torch.testing.assert_close(shifted_timesteps(3, 1.0), torch.tensor([1000.0, 500.5, 1.0, 0.0]), rtol=1e-6, atol=0)
    sigma = 500.5 / 1000
    assert shifted_timesteps(3, 3.0)[1].item() == pytest.approx(1000 * 3 * sigma / (1 + 2 * sigma), rel=1e-6)
    with pytest.raises(ValueError, match="sampling_steps"):
        raw_timesteps(0)


def _sigmas(steps: int = 4) -> list[float]:
    return [t / 1000 for t in shifted_timesteps(steps, 5.0).tolist()]


def _no_motion() -> torch.Tensor:
    return torch.zeros(SHAPE[0], SHAPE[1], 0, *SHAPE[3:])


def test_linear_velocity_without_noise_matches_product_formula() -> None:
    # v = c*x, eps = 0:  x_{i+1} = (1 - s_{i+1}) (1 - s_i c) x_i  =>  x_4 = x_0 * prod_i (1 - s_i c) * prod_{i>=1} (1 - s_i)
    c = 0.3
    x_init = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    zeros = GivenNoise(torch.zeros(SHAPE), torch.zeros(4, *SHAPE))
    out = denoise(lambda x, t: c * x, x_init, _no_motion(), shifted_timesteps(4, 5.0), zeros)
    s = _sigmas()
    factor = math.prod(1 - si * c for si in s[:4]) * math.prod(1 - si for si in s[1:4])
    torch.testing.assert_close(out, x_init * factor, rtol=1e-6, atol=1e-6)


def test_zero_velocity_mixes_the_step_noise_with_closed_form_weights() -> None:
    # v = 0: x_{i+1} = (1 - s_{i+1}) x_i + s_{i+1} eps_i; the last draw (s_4 = 0) has weight 0 but is still drawn.
    g = torch.Generator().manual_seed(2)
    x_init = torch.randn(SHAPE, generator=g)
    eps = torch.randn(4, *SHAPE, generator=g)
    s = _sigmas()
    out = denoise(lambda x, t: torch.zeros_like(x), x_init, _no_motion(), shifted_timesteps(4, 5.0), GivenNoise(x_init, eps))
    expected = (
        (1 - s[1]) * (1 - s[2]) * (1 - s[3]) * x_init
        + s[1] * (1 - s[2]) * (1 - s[3]) * eps[0]
        + s[2] * (1 - s[3]) * eps[1]
        + s[3] * eps[2]
    )
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_perfect_velocity_recovers_the_clean_latent_and_keeps_motion() -> None:
    # On the flow path x = (1 - s) x0 + s eps, v = (x - x0) / s gives x0 exactly; sigma_4 = 0 ends on x0.
    g = torch.Generator().manual_seed(3)
    x0_true = torch.randn(SHAPE, generator=g)
    motion = torch.randn(SHAPE[0], SHAPE[1], 2, *SHAPE[3:], generator=g)
    x0_true[:, :, :2] = motion
    noise = GivenNoise(torch.randn(SHAPE, generator=g), torch.randn(4, *SHAPE, generator=g))
    seen: list[tuple[int, torch.Tensor, float]] = []

    def perfect(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x - x0_true) / (t.item() / 1000)

    def record(i: int, dit_in: torch.Tensor, t: torch.Tensor, dit_out: torch.Tensor) -> None:
        seen.append((i, dit_in.clone(), t.item()))

    timesteps = shifted_timesteps(4, 5.0)
    out = denoise(perfect, noise.initial(SHAPE, torch.float32, torch.device("cpu")), motion, timesteps, noise, on_step=record)
    torch.testing.assert_close(out, x0_true, rtol=1e-5, atol=1e-5)
    assert [i for i, _, _ in seen] == [0, 1, 2, 3]
    assert [t for _, _, t in seen] == timesteps[:4].tolist()
    for _, dit_in, _ in seen:  # the clean motion latents are in the DiT input at every step
        assert torch.equal(dit_in[:, :, :2], motion)
    assert torch.equal(out[:, :, :2], motion)


def test_motion_is_reimposed_after_every_update_and_inputs_are_not_modified() -> None:
    g = torch.Generator().manual_seed(4)
    x_init = torch.randn(SHAPE, generator=g)
    motion = torch.randn(SHAPE[0], SHAPE[1], 1, *SHAPE[3:], generator=g)
    x_before, m_before = x_init.clone(), motion.clone()
    inputs: list[torch.Tensor] = []

    def dit(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inputs.append(x.clone())
        return torch.full_like(x, 7.0)  # would move the motion frame if it were not re-imposed

    noise = GivenNoise(x_init, torch.randn(4, *SHAPE, generator=g))
    out = denoise(dit, x_init, motion, shifted_timesteps(4, 5.0), noise)
    assert all(torch.equal(x[:, :, :1], motion) for x in inputs)
    assert torch.equal(out[:, :, :1], motion)
    assert not torch.equal(out[:, :, 1:], x_init[:, :, 1:])
    assert torch.equal(x_init, x_before) and torch.equal(motion, m_before)


def test_seeded_noise_follows_the_released_draw_order_across_chunks() -> None:
    # Released order per chunk: one draw in the latent dtype (bf16 on GPU), then one fp32 draw per step,
    # from one generator that persists across chunks.
    timesteps = shifted_timesteps(4, 5.0)
    generator = torch.Generator().manual_seed(9999)
    noise = SeededNoise(generator)
    outs = []
    for _ in range(2):
        init = noise.initial(SHAPE, torch.bfloat16, torch.device("cpu"))
        outs.append((init, denoise(lambda x, t: torch.zeros_like(x, dtype=torch.float32), init, _no_motion(), timesteps, noise)))

    manual = torch.Generator().manual_seed(9999)
    s = _sigmas()
    for init, out in outs:
        want_init = torch.randn(SHAPE, dtype=torch.bfloat16, generator=manual)
        eps = [torch.randn(SHAPE, dtype=torch.float32, generator=manual) for _ in range(4)]
        assert torch.equal(init, want_init)
        x = want_init.float()
        for i in range(4):
            x = (1 - s[i + 1]) * x + s[i + 1] * eps[i]
        torch.testing.assert_close(out, x, rtol=1e-6, atol=1e-6)
        assert out.dtype == torch.float32
    assert torch.equal(generator.get_state(), manual.get_state())


def test_given_noise_reports_missing_draws() -> None:
    noise = GivenNoise(torch.zeros(SHAPE), torch.zeros(2, *SHAPE))
    with pytest.raises(IndexError, match="step noise 2"):
        denoise(lambda x, t: torch.zeros_like(x), torch.zeros(SHAPE), _no_motion(), shifted_timesteps(4, 5.0), noise)


def test_denoise_rejects_unbatched_latents() -> None:
    with pytest.raises(ValueError, match="batched"):
        denoise(lambda x, t: x, torch.zeros(SHAPE[1:]), torch.zeros(4, 1, 2, 3), shifted_timesteps(4, 5.0),
                GivenNoise(torch.zeros(SHAPE), torch.zeros(4, *SHAPE)))
