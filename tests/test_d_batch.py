"""How D's batch norm sees a step's images (the d_batch setting): the mechanism, not only the outcome.

Batch norm over an all-generated batch subtracts each feature's batch mean, and its backward
pass removes the batch-mean part of the gradient: with `separate` batches, G gets no signal
against what all its samples share. With `joint` batches ([real; fake] in one pass) it does.
"""
import pandas as pd
import pytest
import torch

from models.losses import gan_g_loss, get_family
from models.networks import D_BATCHES, DOut, MLPDiscriminator, discriminate
from sweep.plan.config import TrialConfig
from sweep.train.point import build_models

B = 16


def common_share(grad: torch.Tensor) -> float:
    """||mean_i g_i|| / mean_i ||g_i|| of a (B, 1024) gradient: 0 when no direction is shared
    by the samples, 1 when every sample gets the same one."""
    return float(grad.mean(0).norm() / grad.norm(dim=1).mean())


def _batches(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    real = torch.rand(B, 1024, generator=gen) * 2 - 1
    fake = (torch.rand(B, 1024, generator=gen) * 0.2 + 0.7).requires_grad_(True)  # grey, alike
    return real, fake


def _g_grad(d, real, fake, d_batch) -> torch.Tensor:
    fake.grad = None
    _, out = discriminate(d, real, fake, d_batch)
    gan_g_loss(out, None).backward()
    return fake.grad.clone()


def test_separate_batch_norm_removes_the_batch_mean_of_gs_gradient():
    """nLayerD 3: x -> Linear -> ReLU -> Linear -> BN -> ReLU -> logit. With every first-layer
    unit active (bias +5), the input of BN is linear in x, so the pixel gradient G gets is
    W1^T W2^T (BN's input gradient), whose batch mean BN's backward pass sets to zero."""
    torch.manual_seed(0)
    d = MLPDiscriminator(3, 8, dropout=0.0)
    with torch.no_grad():
        d.body[0].bias.fill_(5.0)
    real, fake = _batches()
    assert (d.body[0](fake) > 0).all() and (d.body[0](real) > 0).all()  # the ReLU passes everything
    separate = _g_grad(d, real, fake, "separate")
    joint = _g_grad(d, real, fake, "joint")
    assert separate.abs().mean() > 0 and joint.abs().mean() > 0
    assert common_share(separate) < 1e-5  # zero up to float rounding
    assert common_share(joint) > 0.1


def test_the_mechanism_at_the_batch_norm_of_a_default_d():
    """On D as the trial builds it (weights N(0, 0.002)), at the input of its batch norm: the
    gradient's batch mean over the generated samples is zero with `separate`, not with `joint`."""
    cfg = TrialConfig(family="gan", nLayerD=3, sizeD=32)
    torch.manual_seed(1)
    _, _, d = build_models(cfg, torch.device("cpu"))
    bn = next(m for m in d.modules() if isinstance(m, torch.nn.BatchNorm1d))
    real, fake = _batches(1)
    grads = {}
    for d_batch in D_BATCHES:
        seen = []
        hook = bn.register_full_backward_hook(lambda m, gin, gout: seen.append(gin[0].detach().clone()))
        _g_grad(d, real, fake, d_batch)
        hook.remove()
        grads[d_batch] = seen[0][-B:]  # the generated rows ((2B, C) joint, (B, C) separate)
    for d_batch, g in grads.items():
        assert g.shape == (B, 32) and g.abs().mean() > 0, d_batch
    scale = grads["separate"].abs().mean()
    assert grads["separate"].mean(0).abs().max() < 1e-5 * scale
    assert grads["joint"].mean(0).abs().max() > 0.05 * grads["joint"].abs().mean()


def test_without_batch_norm_the_setting_changes_nothing():
    """nLayerD 2 has no batch norm (and no dropout here): joint and separate are the same D
    outputs and the same G gradient, up to float rounding of the longer matmul."""
    torch.manual_seed(2)
    d = MLPDiscriminator(2, 8, dropout=0.0)
    real, fake = _batches(2)
    outs = {k: discriminate(d, real, fake, k) for k in D_BATCHES}
    for a, b in zip(outs["joint"], outs["separate"]):
        assert torch.allclose(a.score, b.score, rtol=1e-5, atol=1e-7)
    assert torch.allclose(_g_grad(d, real, fake, "joint"), _g_grad(d, real, fake, "separate"),
                          rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("family", ["ebgan_pt", "began"])
def test_joint_batches_split_back_into_real_and_fake(family):
    """An auto-encoder D's energies and codes come back as (B,) and (B, sizeD) per half, in
    order: the joint pass's rows 0..B-1 are the real batch, B..2B-1 the generated one; with a
    pack axis K in front, each point's halves stay its own."""
    cfg = TrialConfig(family=family, nLayerD=3, sizeD=8)
    torch.manual_seed(3)
    _, _, d = build_models(cfg, torch.device("cpu"))
    d.eval()  # running statistics: a row's output then depends on that row alone
    real, fake = _batches(3)
    r, f = discriminate(d, real, fake.detach(), "joint")
    assert r.score.shape == f.score.shape == (B,) and r.code.shape == f.code.shape == (B, 8)
    torch.testing.assert_close(r.score, d(real).score)
    torch.testing.assert_close(f.code, d(fake.detach()).code)

    def stacked(x):  # a pack of K = 2 copies: (2, N, 1024) -> DOut of (2, N)
        outs = [d(x[k]) for k in range(x.shape[0])]
        return DOut(torch.stack([o.score for o in outs]), torch.stack([o.code for o in outs]))

    r2, f2 = discriminate(stacked, torch.stack([real, fake.detach()]), torch.stack([fake.detach(), real]),
                          "joint")
    assert r2.score.shape == (2, B) and f2.code.shape == (2, B, 8)
    torch.testing.assert_close(r2.score[1], d(fake.detach()).score)
    torch.testing.assert_close(f2.score[1], d(real).score)
    assert get_family(family).discriminator == "autoencoder"


def test_an_unknown_d_batch_is_refused():
    with pytest.raises(ValueError, match="d_batch"):
        discriminate(lambda x: DOut(x.sum(-1), None), torch.zeros(2, 4), torch.zeros(2, 4), "both")
    with pytest.raises(ValueError, match="d_batch: 'both' is not one of"):
        TrialConfig(d_batch="both")


def test_auto_resolves_per_family_and_ids_name_only_the_other_choice():
    """auto: joint for a logit D (GAN), separate for an auto-encoder (EBGAN, EBGAN-PT, BEGAN),
    stored resolved; a point id names d_batch only when it is not its family's choice."""
    want = {"gan": "joint", "ebgan": "separate", "ebgan_pt": "separate", "began": "separate"}
    for family, d_batch in want.items():
        cfg = TrialConfig(family=family)
        assert cfg.d_batch == d_batch and get_family(family).d_batch == d_batch
        other = cfg.replace(d_batch="separate" if d_batch == "joint" else "joint")
        assert cfg.point_id.endswith("-lr0.001-s0")
        assert other.point_id == cfg.point_id.replace("-s0", f"-{'sepbn' if d_batch == 'joint' else 'jointbn'}-s0")
    assert TrialConfig(family="gan", d_batch="auto").as_dict()["d_batch"] == "joint"


def test_auto_gives_a_dcgan_gan_separate_batches_and_its_id_says_so():
    """The seeded DCGAN study (docs/reproduction.md): auto resolves by family and arch, separate for a
    DCGAN GAN; ids spell d_batch against the family's choice as before, so auto and an explicit
    separate are one point ('-sepbn'), and joint is the untagged id of the runs before."""
    from models.archs import get_arch

    conv = dict(arch="dcgan", nLayerG=4, nLayerD=4, sizeG=64, sizeD=64)
    assert dict(get_arch("dcgan").d_batch) == {"logit": "separate"} and get_arch("mlp").d_batch == ()
    gan = TrialConfig(family="gan", **conv)
    assert gan.d_batch == "separate" and gan == TrialConfig(family="gan", d_batch="separate", **conv)
    assert gan.point_id == "gan-dcgan-G4x64-D4x64-nodrop-adam.adam-lr0.001-sepbn-s0"
    assert TrialConfig(family="gan", d_batch="joint", **conv).point_id == "gan-dcgan-G4x64-D4x64-nodrop-adam.adam-lr0.001-s0"
    assert TrialConfig(family="gan").d_batch == "joint"  # the paper's fully-connected GAN: as before
    for family in ("ebgan", "ebgan_pt", "began"):  # auto-encoders: separate on both archs, no tag
        cfg = TrialConfig(family=family, **conv)
        assert cfg.d_batch == "separate" and "bn-" not in cfg.point_id


def test_a_run_whose_auto_meant_joint_for_dcgan_gans_is_not_resumed_otherwise(tmp_path):
    """A run started before auto read the arch (no `auto_rules` in its manifest) trained its DCGAN GANs
    with joint batches; resuming one unfinished would now train it with separate ones: refused."""
    from sweep.errors import UserError
    from sweep.plan.config import AUTO_RULES, setting_defaults
    from sweep.record.results import write_results
    from sweep.record.rundir import RunDir

    conv = dict(arch="dcgan", nLayerG=4, nLayerD=4, sizeG=64, sizeD=64)
    gan, ebgan = TrialConfig(family="gan", **conv), TrialConfig(family="ebgan", **conv)
    old = {"setting_defaults": setting_defaults(), "git_commit": "ae67658"}
    write_results(pd.DataFrame([{"point_id": p.point_id, "status": "pending"} for p in (gan, ebgan)]), tmp_path)
    with pytest.raises(UserError, match=r"whose d_batch `auto` resolved by version 1 of its rules \(now 2\); 1 "
                                        rf"unfinished points such as {gan.point_id} would train with 'separate'.*"
                                        "commit ae67658"):
        RunDir(tmp_path, old, (gan, ebgan)).check_defaults()
    RunDir(tmp_path, old, (ebgan,)).check_defaults()  # the EBGAN: separate under both versions
    RunDir(tmp_path, {**old, "auto_rules": AUTO_RULES}, (gan, ebgan)).check_defaults()  # a run of today


def test_a_plugin_family_gets_the_choice_of_its_discriminator_kind():
    from models.losses import Family, ebgan_d_loss, ebgan_g_loss, gan_d_loss, gan_g_loss
    from models.registry import PluginError

    assert Family("lsgan", "logit", gan_d_loss, gan_g_loss, "x").d_batch == "joint"
    assert Family("aegan", "autoencoder", ebgan_d_loss, ebgan_g_loss, "x").d_batch == "separate"
    assert Family("aegan", "autoencoder", ebgan_d_loss, ebgan_g_loss, "x", d_batch="joint").d_batch == "joint"
    with pytest.raises(PluginError, match="d_batch 'both' is not one of joint, separate"):
        Family("x", "logit", gan_d_loss, gan_g_loss, "x", d_batch="both")


def test_joint_batches_cost_two_more_d_passes_per_sample_in_the_plan():
    """The plan's FLOPs (sweep/plan/grid.py): a joint G step runs D forward and backward on the real
    batch too: 2 * samples * 2 MD more (MD: D's MACs per sample, models/archs.py)."""
    from models.archs import mlp_macs
    from sweep.plan.grid import estimate_flops

    cfg = TrialConfig(family="gan", nLayerD=3, sizeD=128, epochs=1, n_train=6400, n_eval=10)
    _, md = mlp_macs(cfg, "logit")
    assert md == 1024 * 128 + 128 * 128 + 128
    samples = 6400
    assert estimate_flops(cfg) - estimate_flops(cfg.replace(d_batch="separate")) == 2 * samples * 2 * md


def test_a_run_started_before_the_setting_is_not_resumed_with_another_meaning(tmp_path):
    """A manifest without `setting_defaults` was written before d_batch existed: its GANs trained
    on separate batches. Resuming an unfinished GAN point would train it with joint ones, so
    resume refuses (one line); unfinished points whose families keep separate may go on."""
    from sweep.errors import UserError
    from sweep.record.results import write_results
    from sweep.record.rundir import RunDir

    gan, ebgan = TrialConfig(family="gan"), TrialConfig(family="ebgan")
    trials = (gan, ebgan)

    def run(manifest):  # the run directory as resume sees it: its manifest and plan
        return RunDir(tmp_path, manifest, trials)

    write_results(pd.DataFrame([{"point_id": gan.point_id, "status": "pending"},
                                {"point_id": ebgan.point_id, "status": "pending"}]), tmp_path)
    old = {"git_commit": "67e0d6a"}
    assert run(old).changed_defaults() == {"d_batch": "separate"}
    with pytest.raises(UserError, match=r"default d_batch was 'separate' \(now 'auto'\); 1 unfinished points such "
                                        rf"as {gan.point_id} would train with 'joint'.*commit 67e0d6a"):
        run(old).check_defaults()
    write_results(pd.DataFrame([{"point_id": gan.point_id, "status": "ok"},
                                {"point_id": ebgan.point_id, "status": "pending"}]), tmp_path)
    run(old).check_defaults()  # the GAN is finished; the EBGAN trains as it would have
    from sweep.plan.config import setting_defaults

    from sweep.plan.config import AUTO_RULES

    now = {"setting_defaults": setting_defaults(), "auto_rules": AUTO_RULES}
    assert run(now).changed_defaults() == {} and setting_defaults()["d_batch"] == "auto"
    # version 1 of auto's rules (no `auto_rules`) differs only on DCGAN GANs: these mlp points may go on
    assert set(run({"setting_defaults": setting_defaults()}).changed_defaults()) == {"d_batch", "energy_norm"}
    run({"setting_defaults": setting_defaults()}).check_defaults()
    (tmp_path / "results.parquet").unlink()
    run(now).check_defaults()
    with pytest.raises(UserError, match="1 unfinished points such as gan-"):
        run(old).check_defaults()  # no table: every point counts as unfinished
