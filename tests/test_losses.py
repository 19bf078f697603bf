"""Losses and networks against hand-computed values."""
import math

import pytest
import torch

from models.losses import FAMILIES, LossParams, get_family, pulling_away_term
from models.networks import AutoEncoderDiscriminator, DOut, Generator, MLPDiscriminator

HP = LossParams(margin=10.0, pt_weight=0.1)


def test_ebgan_losses_on_a_tiny_batch():
    real = DOut(torch.tensor([1.0, 3.0]), None)
    fake = DOut(torch.tensor([4.0, 12.0]), None)
    # L_D per sample: 1 + max(0, 10 - 4) = 7 and 3 + max(0, 10 - 12) = 3 -> mean 5
    assert get_family("ebgan").d_loss(real, fake, HP).item() == pytest.approx(5.0)
    # L_G = mean D(G(z)) = (4 + 12) / 2
    assert get_family("ebgan").g_loss(fake, HP).item() == pytest.approx(8.0)


def test_gan_losses_at_zero_logits():
    zero = DOut(torch.zeros(4), None)
    assert get_family("gan").d_loss(zero, zero, HP).item() == pytest.approx(2 * math.log(2))
    assert get_family("gan").g_loss(zero, HP).item() == pytest.approx(math.log(2))
    # non-saturating: L_G = -log sigma(a); at a = 2: log(1 + e^-2)
    two = DOut(torch.full((3,), 2.0), None)
    assert get_family("gan").g_loss(two, HP).item() == pytest.approx(math.log1p(math.exp(-2)))


def test_pulling_away_term_small_example():
    # cos(s1,s2) = 0, cos(s1,s3) = cos(s2,s3) = 1/sqrt(2): squared 0, 1/2, 1/2.
    # sum over ordered pairs i != j = 2 * (0 + 1/2 + 1/2) = 2; / (N (N-1)) = 2 / 6
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert pulling_away_term(s).item() == pytest.approx(1 / 3)
    # rows are normalised: scaling a row changes nothing
    assert pulling_away_term(s * torch.tensor([[2.0], [5.0], [0.3]])).item() == pytest.approx(1 / 3)
    # the known bugs give other numbers: no square (0.4714), diagonal kept (5/9)
    assert pulling_away_term(s).item() != pytest.approx(2 * 2 ** -0.5 * 2 / 6)
    assert pulling_away_term(s).item() != pytest.approx((2 + 3) / 9)


def test_pulling_away_term_extremes():
    assert pulling_away_term(torch.eye(5)).item() == pytest.approx(0.0)
    same = torch.tensor([[1.0, 2.0, 3.0]]).repeat(4, 1)
    assert pulling_away_term(same).item() == pytest.approx(1.0)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # cos = -1, squared = 1
    assert pulling_away_term(opposite).item() == pytest.approx(1.0)


def test_ebgan_pt_generator_loss_adds_weighted_pt():
    code = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    fake = DOut(torch.tensor([2.0, 4.0, 6.0]), code)
    assert get_family("ebgan_pt").g_loss(fake, HP).item() == pytest.approx(4.0 + 0.1 / 3)
    # D's loss is plain EBGAN: the PT term is in G's loss only
    real = DOut(torch.tensor([1.0, 1.0, 1.0]), code)
    assert get_family("ebgan_pt").d_loss(real, fake, HP).item() == \
        pytest.approx(get_family("ebgan").d_loss(real, fake, HP).item())


@pytest.mark.parametrize("norm,expected", [("l2", 16.0), ("l2_squared", 256.0), ("mse", 0.25)])
def test_energy_norms(norm, expected):
    d = AutoEncoderDiscriminator(2, 8, 0.0, norm)
    torch.nn.init.zeros_(d.decoder.weight)  # reconstruction = 0, so energy = ||x||
    x = torch.full((3, 1024), 0.5)  # ||x||_2 = 0.5 * 32 = 16
    out = d(x)
    assert out.score.shape == (3,) and out.code.shape == (3, 8)
    assert torch.allclose(out.score, torch.full((3,), expected))


def test_layer_counts_and_batch_norm_placement():
    g = Generator(4, 50, 10)
    lin = [m for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(10, 50), (50, 50), (50, 50), (50, 1024)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in g.modules()) == 3  # not after output
    d = MLPDiscriminator(3, 20, dropout=0.5)
    lin = [m for m in d.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(1024, 20), (20, 20), (20, 1)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in d.modules()) == 1  # not after input/output
    assert sum(isinstance(m, torch.nn.Dropout) for m in d.modules()) == 2
    ae = AutoEncoderDiscriminator(4, 20, 0.0, "l2")  # 3 encoder layers + 1 decoder layer
    lin = [m for m in ae.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(1024, 20), (20, 20), (20, 20), (20, 1024)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in ae.modules()) == 2


def test_initialisation_scales():
    torch.manual_seed(0)
    g = Generator(3, 800, 100)
    d = MLPDiscriminator(3, 800, 0.0)
    assert g.out.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert d.out.weight.std().item() == pytest.approx(0.002, rel=0.2)
    assert all(m.bias.abs().sum() == 0 for m in list(g.modules()) + list(d.modules())
               if isinstance(m, torch.nn.Linear))


def test_family_registry():
    assert set(FAMILIES) == {"gan", "ebgan", "ebgan_pt", "began"}
    with pytest.raises(ValueError, match="unknown family"):
        get_family("wgan")


# --- BEGAN -------------------------------------------------------------------
def test_began_k_update_and_m_global_by_hand():
    from models.losses import began_k_update, began_m_global

    t = torch.tensor
    # k = 0.5 + 0.1 (0.5 * 2 - 0.4) = 0.56; M_global = 2 + |0.5 * 2 - 0.4| = 2.6
    assert began_k_update(t(0.5), t(2.0), t(0.4), gamma=0.5, lambda_k=0.1).item() == pytest.approx(0.56)
    assert began_m_global(t(2.0), t(0.4), gamma=0.5).item() == pytest.approx(2.6)
    # the clip, both ends: 0.99 + 1 * (1 - 0) = 1.99 -> 1; 0 + 0.001 (0.05 - 5) < 0 -> 0
    assert began_k_update(t(0.99), t(1.0), t(0.0), gamma=1.0, lambda_k=1.0).item() == 1.0
    assert began_k_update(t(0.0), t(0.1), t(5.0), gamma=0.5, lambda_k=0.001).item() == 0.0
    # M_global when G overshoots: L(G) above gamma L(x) counts the same as below it
    assert began_m_global(t(1.0), t(0.9), gamma=0.5).item() == pytest.approx(1.4)


def test_began_losses_and_balance_steps():
    from models.losses import Balance

    hp = LossParams(margin=10.0, pt_weight=0.1, gamma=0.5, lambda_k=0.1)
    bal = Balance("cpu", k=0.25)
    real = DOut(torch.tensor([1.0, 3.0]), None)  # L(x) = 2
    fake = DOut(torch.tensor([4.0, 8.0]), None)  # L(G(z)) = 6
    began = get_family("began")
    assert began.d_loss(real, fake, hp, bal).item() == pytest.approx(2 - 0.25 * 6)
    assert began.g_loss(fake, hp, bal).item() == pytest.approx(6.0)
    out = bal.step(real, DOut(torch.tensor([0.2, 0.6]), None), hp)  # L(G) = 0.4
    assert out["m_global"].item() == pytest.approx(2 + abs(1 - 0.4))
    assert bal.k.item() == pytest.approx(0.25 + 0.1 * (1 - 0.4))
    bal.step(real, fake, hp)  # 0.31 + 0.1 (1 - 6) < 0
    assert bal.k.item() == 0.0


def test_l1_energy_is_the_mean_absolute_error():
    d = AutoEncoderDiscriminator(2, 8, 0.0, "l1")
    torch.nn.init.zeros_(d.decoder.weight)
    x = torch.full((3, 1024), -0.5)
    assert torch.allclose(d(x).score, torch.full((3,), 0.5))


def test_energy_norm_auto_resolves_per_family():
    from sweep.plan.config import TrialConfig

    assert TrialConfig(family="began").energy_norm == "l1"
    assert TrialConfig(family="ebgan").energy_norm == "l2"
    assert TrialConfig(family="began", energy_norm="mse").energy_norm == "mse"  # BEGAN's eta = 2
