"""Each registered loss on known inputs, and the two penalties on critics with known gradients."""

import math

import pytest
import torch

from genkit.losses import BUILTIN_LOSSES, gradient_penalty, lecam_penalty, mismatched_rows, r1_penalty
from genkit.plugins import registry

LOSSES = {loss.name: loss for loss in BUILTIN_LOSSES}
real = torch.tensor([2.0, 0.5])
fake = torch.tensor([-1.0, 0.0])


def sp(x):  # softplus
    return math.log1p(math.exp(x))


def test_every_builtin_loss_is_registered():
    assert set(LOSSES) <= set(registry().losses)
    assert registry().owners[("loss", "ns")] == "genkit.losses"


def test_ns_is_the_seed_documents_loss():
    # L_D = -[log D(x) + log(1 - D(G(z)))], L_G = -log D(G(z)), D = sigmoid
    sig = torch.sigmoid
    expected_d = -(torch.log(sig(real)) + torch.log(1 - sig(fake))).mean()
    assert LOSSES["ns"].discriminator(real, fake).item() == pytest.approx(expected_d.item(), rel=1e-6)
    assert LOSSES["ns"].generator(fake, None).item() == pytest.approx(-torch.log(sig(fake)).mean().item(), rel=1e-6)
    zero = torch.zeros(3)
    assert LOSSES["ns"].discriminator(zero, zero).item() == pytest.approx(2 * math.log(2))


def test_minimax_generator_loss_is_log_one_minus_d():
    assert LOSSES["minimax"].generator(fake, None).item() == pytest.approx((-sp(-1.0) - sp(0.0)) / 2, rel=1e-6)
    assert LOSSES["minimax"].discriminator(real, fake).item() == LOSSES["ns"].discriminator(real, fake).item()


def test_wasserstein_hinge_least_squares_relativistic():
    assert LOSSES["wgan-gp"].discriminator(real, fake).item() == pytest.approx(-0.5 - 1.25)
    assert LOSSES["wgan-gp"].generator(fake, None).item() == pytest.approx(0.5)
    assert LOSSES["wgan-gp"].default_gp == 10.0 and LOSSES["wgan"].default_gp == 0.0
    # hinge: relu(1 - [2, .5]) = [0, .5]; relu(1 + [-1, 0]) = [0, 1]
    assert LOSSES["hinge"].discriminator(real, fake).item() == pytest.approx(0.25 + 0.5)
    # lsgan: 0.5 * mean((real-1)^2) + 0.5 * mean(fake^2) = 0.5 * 0.625 + 0.5 * 0.5
    assert LOSSES["lsgan"].discriminator(real, fake).item() == pytest.approx(0.3125 + 0.25)
    assert LOSSES["lsgan"].generator(fake, None).item() == pytest.approx(0.5 * (4 + 1) / 2)
    # rsgan: softplus(-(real - fake)) = softplus([-3, -0.5])
    assert LOSSES["rsgan"].discriminator(real, fake).item() == pytest.approx((sp(-3) + sp(-0.5)) / 2, rel=1e-6)
    assert LOSSES["rsgan"].generator(fake, real).item() == pytest.approx((sp(3) + sp(0.5)) / 2, rel=1e-6)
    assert LOSSES["rsgan"].uses_real_in_generator


class Linear(torch.nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x, cond=None):
        return x.flatten(1) @ self.w


def test_gradient_penalty_on_a_linear_critic():
    D = Linear(torch.tensor([3.0, 0.0, 0.0, 0.0]))  # ||grad|| = 3 -> (3 - 1)^2 = 4
    x, y = torch.randn(5, 2, 2), torch.randn(5, 2, 2)
    gp = gradient_penalty(D, x, y, None)
    assert gp.item() == pytest.approx(4.0)
    gp.backward()  # the penalty is differentiable w.r.t. the critic: d/dw (|w| - 1)^2 = 2 (|w| - 1) w/|w|
    assert D.w.grad.tolist() == pytest.approx([4.0, 0.0, 0.0, 0.0])


def test_r1_penalty_on_a_linear_critic():
    D = Linear(torch.tensor([0.0, 3.0]))
    assert r1_penalty(D, torch.randn(4, 2), None).item() == pytest.approx(4.5)


def test_lecam_penalty_pulls_real_outputs_down_to_the_fake_average_and_fakes_up_to_the_real_one():
    anchors = torch.tensor([1.0, -1.0])  # moving averages of D on real, on fake
    d_real = torch.tensor([2.0, -3.0])  # only outputs above the fake average count: (2 - -1)^2 = 9, 0
    d_fake = torch.tensor([0.0, 4.0])  # only outputs below the real average count: (1 - 0)^2 = 1, 0
    assert lecam_penalty(d_real, d_fake, anchors).item() == pytest.approx(9 / 2 + 1 / 2)
    assert lecam_penalty(torch.tensor([-2.0]), torch.tensor([3.0]), anchors).item() == 0.0


def test_mismatched_rows_pair_every_example_with_another_class_drawn_evenly():
    cond = torch.tensor([0, 0, 1, 2, 2, 2])
    rng = torch.Generator().manual_seed(0)
    counts = torch.zeros(6, 6)
    for _ in range(600):
        rows = mismatched_rows(cond, rng)
        assert rows.shape == (6,) and bool((cond[rows] != cond).all())
        counts[torch.arange(6), rows] += 1
    # row 0 (class 0) may take rows 2-5, each about a quarter of the time; row 2 (class 1) rows 0, 1, 3, 4, 5
    assert counts[0, :2].sum() == 0 and counts[0, 2:].min() > 0.15 * 600
    assert counts[2, 2] == 0 and counts[2].min() == 0 and (counts[2] > 0).sum() == 5
    again = mismatched_rows(cond, torch.Generator().manual_seed(0))
    assert torch.equal(again, mismatched_rows(cond, torch.Generator().manual_seed(0)))  # seeded: reproducible


@pytest.mark.parametrize("cond", [None, torch.tensor([3, 3, 3]), torch.tensor([[0.1, 0.2], [0.3, 0.4]]),
                                  torch.tensor([0.0, 1.0]), torch.tensor([4])])
def test_mismatched_rows_none_without_class_labels_or_without_another_class(cond):
    """Unconditional data, vector conditions (cross-modal embeddings), float values, a batch of one class."""
    assert mismatched_rows(cond, torch.Generator().manual_seed(0)) is None
