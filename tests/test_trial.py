"""The one trial loop: a step of every family, determinism, resume, divergence, the CLI."""
import json
import math

import pytest
import torch

from helpers import FAMILIES, REPO, TINY_DCGAN, gansweep, strip
from sweep.plan.config import TrialConfig
from sweep.record.rows import summarize
from sweep.train.loop import run_stack, run_trial
from sweep.train.point import build_models


TINY = dict(nLayerG=2, nLayerD=2, sizeG=32, sizeD=16, n_train=64, batch_size=32, n_eval=100,
            epochs=1, seed=3)




def test_score_settings_come_from_the_trial_config(mnist, scorer):
    """prob_eps and coverage_min_frac are recorded in every row, so the scores must use them
    (the first version always scored at the defaults: prob_eps 1e-4 recorded I' at 1e-12)."""
    from models.metrics import ScoreSettings
    from sweep.train.data import to_model_space

    real = to_model_space(mnist.test_images[:500])

    class RealDigits:  # the real scorer, shown real digits, with whatever settings the trial passes
        def score(self, images, *args):
            return scorer.score(real, *args)

    base = TrialConfig(family="gan", **{**TINY, "n_train": 128, "n_eval": 100})
    default = run_trial(base, mnist.train_images, RealDigits()).history[-1]
    loose = run_trial(base.replace(prob_eps=1e-4, coverage_min_frac=0.3), mnist.train_images,
                      RealDigits()).history[-1]
    want = scorer.score(real, ScoreSettings(eps=1e-4, coverage_min_frac=0.3))
    assert loose["i_prime"] == want["i_prime"] and loose["classes_covered"] == want["classes_covered"]
    assert default["i_prime"] == scorer.score(real)["i_prime"]
    # confident digits: the clamp at 1e-4 caps log 1/p(y|x), and no digit holds 30% of the argmaxes
    assert loose["i_prime"] < default["i_prime"] - 1.0
    assert (loose["classes_covered"], default["classes_covered"]) == (0, 10)


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
@pytest.mark.parametrize("family", FAMILIES)
def test_one_training_step_of_each_family_and_arch(family, arch, mnist, scorer):
    shape = TINY_DCGAN if arch == "dcgan" else {}
    cfg = TrialConfig(family=family, **{**TINY, **shape, "n_train": 32})  # exactly one step
    torch.manual_seed(cfg.seed)
    _, g0, d0 = build_models(cfg, torch.device("cpu"))
    run, = run_stack([cfg], mnist.train_images, scorer)
    out = run.outcome()
    captured = {"G": run.g.state_dict(), "D": run.d.state_dict()}
    assert out.status == "ok" and len(out.history) == 1
    h = out.history[0]
    assert h["epoch"] == 1
    for k in ("loss_d", "loss_g", "i_prime", "inception_score", "fid"):
        assert math.isfinite(h[k]), k
    assert 1.0 <= h["inception_score"] <= 10.0
    assert 0 <= h["classes_covered"] <= 10
    assert out.samples.shape == (64, 32, 32) and out.samples.dtype == torch.uint8
    if family != "gan":
        assert h["d_real"] > 0 and h["d_fake"] > 0  # energies are non-negative norms
    if family == "began":  # one step from k_0 = 0: k_1 = clip(0.001 (0.5 L(x) - L(G(z))), 0, 1)
        assert 0.0 <= h["k_t"] <= 0.001 and h["m_global"] >= h["d_real"]
    else:
        assert math.isnan(h["k_t"]) and math.isnan(h["m_global"])
    # The step reached every layer: each weight matrix / kernel of G and D moved.
    for name, before in (("G", g0), ("D", d0)):
        after = captured[name]
        stale = [k for k, v in before.named_parameters() if k.endswith("weight") and v.dim() >= 2
                 and torch.equal(v, after[k])]
        assert not stale, f"{name} layers did not train: {stale}"
    # Weight layers as documented: G has nLayerG; a logit D nLayerD; an auto-encoder D
    # nLayerD on mlp (one decoder layer), 2 (nLayerD - 1) on dcgan (a mirrored decoder).
    n_d = 2 * (cfg.nLayerD - 1) if arch == "dcgan" and family != "gan" else cfg.nLayerD
    assert sum(v.dim() >= 2 for v in g0.parameters()) == cfg.nLayerG
    assert sum(v.dim() >= 2 for v in d0.parameters()) == n_d


def test_same_seed_same_result_other_seed_other_result(mnist, scorer):
    cfg = TrialConfig(family="gan", **{**TINY, "epochs": 2})
    a = run_trial(cfg, mnist.train_images, scorer).history
    b = run_trial(cfg, mnist.train_images, scorer).history
    c = run_trial(cfg.replace(seed=4), mnist.train_images, scorer).history
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_a_points_streams_are_those_torch_manual_seed_gives(mnist):
    """A point's private copy of torch's global RNG is read from a fresh generator (torch.manual_seed
    also seeds CUDA, lazily, at a traceback's cost per call without CUDA): the same state, hence the
    same weights as torch.manual_seed(seed) and building the nets; the caller's stream untouched."""
    from sweep.train.point import PointRun, prepare_data

    cfg = TrialConfig(family="ebgan", dropoutD=True, **{**TINY, "seed": 7})
    torch.manual_seed(123)
    outer = torch.get_rng_state()
    run = PointRun(cfg, prepare_data(mnist.train_images, cfg.n_train, "cpu"), torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), outer)
    torch.manual_seed(7)
    assert torch.equal(run._seeded_rng()[0], torch.get_rng_state())
    _, g, d = build_models(cfg, torch.device("cpu"))
    for mine, fresh in ((run.g, g), (run.d, d)):
        a, b = mine.state_dict(), fresh.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family,changes", [("gan", {}), ("gan", {"dropoutD": True, "nLayerD": 3}),
                                             ("ebgan", {"nLayerG": 3}),
                                             ("ebgan_pt", {"dropoutD": True, "dropout_code": False, "nLayerD": 4})])
def test_a_pooled_net_is_the_net_built_anew(family, changes, mnist, scorer):
    """A worker redraws a finished point's nets for its next point of the same shape (NetPool):
    the same weights, statistics, modes and RNG stream after as nets built anew, hence the same
    training; the finished point's state_dict, still held, keeps its values."""
    from sweep.train.loop import start_stack, train_stack
    from sweep.train.point import NetPool, prepare_data

    cfg = TrialConfig(family=family, **{**TINY, **changes, "epochs": 1, "n_eval": 64})
    data = prepare_data(mnist.train_images, cfg.n_train, "cpu")
    pool = NetPool()
    first, = start_stack([cfg], data, pool=pool)
    train_stack([first], scorer)  # trained: moved weights and statistics, gradients, modes toggled
    kept = first.generator_weights()
    kept_values = {k: v.clone() for k, v in kept.items()}
    first.g.eval()  # as if it had left while drawing samples: a new net is in training mode
    first.release_nets(pool)
    assert (pool.hits, pool.misses, len(pool.idle)) == (0, 2, 2)

    nxt = cfg.replace(seed=5, lr=0.01)
    pooled, = start_stack([nxt], data, pool=pool)
    fresh, = start_stack([nxt], data)
    assert (pool.hits, pool.misses, len(pool.idle)) == (2, 2, 0)
    for a, b in ((pooled.g, fresh.g), (pooled.d, fresh.d)):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
        assert [m.training for m in a.modules()] == [m.training for m in b.modules()] and a.training
        assert all(p.grad is None and p.requires_grad for p in a.parameters())
    assert all(torch.equal(x, y) for x, y in zip(pooled._rng, fresh._rng))
    assert all(torch.equal(kept[k], kept_values[k]) for k in kept)
    train_stack([pooled], scorer)
    train_stack([fresh], scorer)
    assert strip(pooled.history) == strip(fresh.history)


def test_the_net_pool_keeps_at_most_its_budget_oldest_shape_first(mnist):
    from sweep.train.loop import start_stack
    from sweep.train.point import NetPool, prepare_data

    cfg = TrialConfig(family="gan", **TINY)
    data = prepare_data(mnist.train_images, cfg.n_train, "cpu")
    n_g, n_d = (sum(p.numel() for p in net.parameters()) for net in build_models(cfg, "cpu")[1:])
    pool = NetPool(max_params=n_g + n_d - 1)

    def train_and_release(c):
        run, = start_stack([c], data, pool=pool)
        run.status = "ok"  # finished, as far as the pool is concerned
        run.release_nets(pool)

    train_and_release(cfg)  # G in, then D: one parameter over the budget, so G (the older) leaves
    assert [k[0].__name__ for k in pool.idle] == ["MLPDiscriminator"] and pool.idle_params == n_d
    train_and_release(cfg.replace(sizeG=4096))  # its G alone is over the budget: built, never kept; D reused
    assert (pool.hits, pool.misses) == (1, 3)
    assert [k[0].__name__ for k in pool.idle] == ["MLPDiscriminator"] and pool.idle_params == n_d
    train_and_release(TrialConfig(family="gan", **{**TINY, **TINY_DCGAN}))  # not Redrawable: built, never kept
    assert (pool.hits, pool.misses, pool.idle_params, len(pool.idle)) == (1, 5, n_d, 1)


def test_a_finished_points_checkpoint_holds_no_weights_nor_streams(mnist, scorer):
    """It never trains again: its history, times, samples and config are what a resume reads."""
    cfg = TrialConfig(family="gan", **TINY)
    run, = run_stack([cfg], mnist.train_images, scorer)
    assert sorted(run.checkpoint()) == ["config", "epoch", "eval_seconds", "history", "samples", "train_seconds"]


class _Stop(Exception):
    pass


@pytest.mark.parametrize("family,arch,dropout", [("ebgan", "mlp", False), ("began", "mlp", False),
                                                 ("ebgan_pt", "dcgan", False), ("gan", "mlp", True),
                                                 ("ebgan", "mlp", True)])
def test_resume_from_checkpoint_is_bit_identical(family, arch, dropout, mnist, scorer, tmp_path):
    """Dropout included: its masks come from the point's own RNG stream, which the checkpoint
    carries (before, a resumed dropout point drew other masks than an uninterrupted one)."""
    shape = TINY_DCGAN if arch == "dcgan" else {}  # conv nets carry BN running stats in 2-D
    cfg = TrialConfig(family=family, dropoutD=dropout, **{**TINY, **shape, "epochs": 3})
    straight = run_trial(cfg, mnist.train_images, scorer).history

    def stop_after_epoch_1(m, ck):  # a worker killed right after its first checkpoint
        torch.save(ck(), tmp_path / "state.pt")
        raise _Stop
    with pytest.raises(_Stop):
        run_trial(cfg, mnist.train_images, scorer, on_epoch=stop_after_epoch_1)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and TrialConfig(**state["config"]) == cfg
    resumed = run_trial(cfg, mnist.train_images, scorer, resume=state).history
    assert strip(resumed) == strip(straight)
    assert len(resumed) == 3


def test_divergence_is_a_result(mnist, scorer):
    # SGD at lr 1e30 overflows the GAN logits within the first steps
    cfg = TrialConfig(family="gan", optimD="sgd", optimG="sgd", lr=1e30,
                      **{**TINY, "n_train": 512, "epochs": 3})
    out = run_trial(cfg, mnist.train_images, scorer)
    assert out.status == "diverged"
    assert out.reason in ("non-finite loss", "non-finite samples")
    assert len(out.history) >= 1 and out.history[-1]["epoch"] >= 1
    s = summarize(cfg, out.history)
    assert s["status"] == "diverged" and math.isnan(s["i_prime"]) and s["diverged_reason"] == out.reason
    assert s["epochs_done"] == out.history[-1]["epoch"]


def test_eval_every_scores_only_those_epochs(mnist, scorer):
    cfg = TrialConfig(family="ebgan", **{**TINY, "epochs": 3, "eval_every": 2})
    out = run_trial(cfg, mnist.train_images, scorer)
    assert [h["epoch"] for h in out.history] == [2, 3]  # every 2nd, and always the last


def test_invalid_configs_are_refused():
    with pytest.raises(ValueError, match="lr"):
        TrialConfig(lr=0.0)
    with pytest.raises(ValueError, match="nLayerG"):
        TrialConfig(nLayerG=1)
    with pytest.raises(ValueError, match="family"):
        TrialConfig(family="wgan")
    with pytest.raises(ValueError, match="batch_size"):
        TrialConfig(batch_size=128, n_train=64)


def test_trial_command_writes_metrics_and_samples(tmp_path, data_root):
    out = tmp_path / "t"
    r = gansweep("trial", "--family", "ebgan", "--nLayerG", "2", "--nLayerD", "2", "--sizeG", "32", "--sizeD", "16",
                 "--epochs", "1", "--n_train", "128", "--n_eval", "100", "--batch_size", "32",
                 "--data-root", data_root, "--out", out, "--threads", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "ok" and m["epochs_done"] == 1 and m["family"] == "ebgan"
    assert m["n_train"] == 128 and m["energy_norm"] == "l2" and m["margin"] == 10.0
    assert 1.0 <= m["inception_score"] <= 10.0 and m["best_epoch"] == 1
    assert len(m["classifier_sha256"]) == 64
    png = (out / "samples.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "curves.csv").read_text().count("\n") == 2  # header + one epoch


def test_the_end_scored_again_draws_all_n_eval_samples_of_the_same_noise(mnist, scorer):
    """score_end_again: the epochs before the last scored on 50 samples, the last on 200, and the 50
    are the first 50 of the 200 (one fixed noise); the training is the same either way."""
    from sweep.train.loop import run_stack, score_end_again

    class Spy:  # the real scorer, recording what it is given
        def __init__(self):
            self.seen = []

        def score(self, x, settings):
            self.seen.append(x.clone())
            return scorer.score(x, settings)

    cfg = TrialConfig(family="ebgan", nLayerG=2, nLayerD=2, sizeG=32, sizeD=16, epochs=3, n_train=128,
                      batch_size=32, n_eval=200)
    spy_few, spy_all = Spy(), Spy()
    few, = run_stack([cfg.replace(n_eval=50)], mnist.train_images, spy_few)
    end = score_end_again(few, spy_few, 200)
    every, = run_stack([cfg], mnist.train_images, spy_all)
    assert [x.shape[0] for x in spy_few.seen] == [50, 50, 50, 200] and [x.shape[0] for x in spy_all.seen] == [200] * 3
    assert torch.equal(spy_few.seen[2], spy_few.seen[3][:50])  # the same G, the same noise's first 50
    assert torch.allclose(spy_few.seen[3], spy_all.seen[2], atol=1e-6)  # the end: the every-epoch trial's samples
    assert [h["loss_d"] for h in few.history] == [h["loss_d"] for h in every.history]
    assert len(few.history) == 3 and few.history[-1] is end and end["epoch"] == 3
    assert end["i_prime"] == pytest.approx(every.history[-1]["i_prime"], abs=1e-6) and few.done


def test_a_trial_records_how_it_was_scored(tmp_path, data_root):
    args = ["trial", "--family", "ebgan", "--nLayerG", "2", "--nLayerD", "2", "--sizeG", "32", "--sizeD", "16",
            "--epochs", "2", "--n_train", "128", "--n_eval", "200", "--batch_size", "32", "--data-root", data_root,
            "--threads", "1"]
    r = gansweep(*args, "--n-eval-progress", "50", "--out", tmp_path / "t", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert (m["n_eval"], m["n_eval_progress"], m["epochs_done"]) == (200, 50, 2)
    assert "scored on 50 samples (the last epoch on 200)" in r.stdout  # gansweep's progress lines
    assert "scoring the last epoch again on 200 samples" in r.stdout
    r = gansweep(*args, "--n-eval-progress", "-1", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == ("gansweep: trial: --n-eval-progress -1: expected 0 (off) or a "
                                                      "number of samples")


def test_data_root_order(monkeypatch, tmp_path):
    from pathlib import Path

    from sweep.train.data import resolve_root

    monkeypatch.setenv("GANSWEEP_DATA", str(tmp_path / "env"))
    assert resolve_root(tmp_path / "flag") == tmp_path / "flag"  # --data-root wins
    assert resolve_root(None) == tmp_path / "env"  # then $GANSWEEP_DATA
    monkeypatch.delenv("GANSWEEP_DATA")
    assert resolve_root(None) == Path("~/.cache/gansweep").expanduser()  # then the cache


def test_data_is_padded_and_scaled(mnist):
    from sweep.train.data import to_model_space

    x = to_model_space(mnist.train_images[:8])
    assert x.shape == (8, 1, 32, 32) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert (x[:, :, :2, :] == -1).all() and (x[:, :, :, -2:] == -1).all()  # 2-pixel background border
    assert torch.equal(x[0, 0, 2:30, 2:30], mnist.train_images[0].float() / 127.5 - 1)


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])  # the stacked path and the module path
def test_a_began_step_is_its_papers_step_by_hand(arch, mnist):
    """One BEGAN step from k_t = 0.3 (BEGAN paper, eq. 4), recomputed by hand from copies of the
    nets as the step found them: z_D and z_G are two draws, L_D = L(x) - k_t L(G(z_D)), L_G is
    L(G(z_G)) under the updated D, and k_{t+1}, M_global read L(x) and L(G(z_G)) of the old D."""
    import copy

    from sweep.train.backends import backend_for
    from sweep.train.loop import train_epoch
    from sweep.train.point import PointRun, prepare_data, sample_noise

    shape = TINY_DCGAN if arch == "dcgan" else {}
    cfg = TrialConfig(family="began", **{**TINY, **shape, "n_train": 32, "began_lambda_k": 0.01})  # one step
    data = prepare_data(mnist.train_images, cfg.n_train, "cpu")
    run = PointRun(cfg, data, torch.device("cpu"))
    run.state.k = torch.tensor(0.3)
    g0, d0, gen = copy.deepcopy(run.g), copy.deepcopy(run.d), copy.deepcopy(run.gen)
    pack = backend_for([run])  # stacked (mlp) or the point's own modules (dcgan)
    m = train_epoch(pack)[run]
    pack.write_back()

    perm = torch.randperm(cfg.n_train, generator=gen)
    x = data[perm[:cfg.batch_size]]
    z_d, z_g = (sample_noise(cfg, cfg.batch_size, gen, "cpu") for _ in range(2))
    assert not torch.equal(z_d, z_g)
    with torch.no_grad():
        l_x, l_d, l_g_old = (d0(v).score.mean().item() for v in (x, g0(z_d), g0(z_g)))
        l_g_new = run.d(g0(z_g)).score.mean().item()  # D after its step, G before its own
    k1 = min(max(0.3 + 0.01 * (0.5 * l_x - l_g_old), 0.0), 1.0)
    assert m["loss_d"] == pytest.approx(l_x - 0.3 * l_d, rel=1e-5)
    assert m["d_real"] == pytest.approx(l_x, rel=1e-5) and m["d_fake"] == pytest.approx(l_d, rel=1e-5)
    assert m["loss_g"] == pytest.approx(l_g_new, rel=1e-5)
    assert m["k_t"] == pytest.approx(k1, rel=1e-6)
    assert m["m_global"] == pytest.approx(l_x + abs(0.5 * l_x - l_g_old), rel=1e-5)
    assert l_g_new != pytest.approx(l_g_old, rel=1e-6)  # the two D states do differ


def test_sample_bn_train_draws_with_batch_statistics_and_changes_nothing_else(mnist, scorer):
    """sample_bn: train normalises G's batch norm by each batch_size slice of the n_eval
    samples (100 = 32 + 32 + 36: a last slice of 4 is kept, one of 1 would join the one before),
    by hand with nn.BatchNorm1d in training mode; training and running statistics are untouched."""
    import copy

    from sweep.train.backends import StackedBackend
    from sweep.train.point import PointRun, eval_chunks, prepare_data, sampling_mode

    cfg = TrialConfig(family="gan", **{**TINY, "nLayerG": 3, "n_eval": 100})
    assert eval_chunks(cfg.replace(sample_bn="train")) == [(0, 32), (32, 64), (64, 96), (96, 100)]
    assert eval_chunks(cfg.replace(sample_bn="train", n_eval=97)) == [(0, 32), (32, 64), (64, 97)]
    assert eval_chunks(cfg) == [(0, 100)]
    data = prepare_data(mnist.train_images, cfg.n_train, "cpu")
    for mode in ("eval", "train"):
        run = PointRun(cfg.replace(sample_bn=mode), data, torch.device("cpu"))
        stack = StackedBackend([run])
        g = copy.deepcopy(run.g).train(mode == "train")
        with torch.no_grad():
            by_hand = torch.cat([g(run.eval_z[a:b]) for a, b in eval_chunks(run.cfg)])  # (100, 1024)
            drawn = stack.samples()[0]
        assert torch.allclose(drawn, by_hand, atol=1e-5), mode
        stack.write_back()
        assert torch.equal(run.g.body[1].running_mean, torch.zeros(cfg.sizeG))  # untouched
    # the module path (DCGAN nets) draws the same way
    conv = PointRun(TrialConfig(family="gan", **{**TINY, **TINY_DCGAN, "sample_bn": "train"}), data,
                    torch.device("cpu"))
    g = copy.deepcopy(conv.g).train()
    with torch.no_grad(), sampling_mode(conv.g, "train"):
        assert torch.allclose(conv.g(conv.eval_z[:32]), g(conv.eval_z[:32]), atol=1e-6)
    assert all(torch.equal(v, g0) for v, g0 in zip(conv.g.state_dict().values(),
                                                    PointRun(conv.cfg, data, torch.device("cpu")).g.state_dict().values()))
    trained = {m: run_stack([cfg.replace(sample_bn=m, epochs=2)], mnist.train_images, scorer)[0]
               for m in ("eval", "train")}
    ev, tr = trained["eval"], trained["train"]
    loss_keys = ("loss_d", "loss_g", "d_real", "d_fake")
    assert [[h[k] for k in loss_keys] for h in ev.history] == [[h[k] for k in loss_keys] for h in tr.history]
    g_ev, g_tr = ev.generator_weights(), tr.generator_weights()
    assert all(torch.equal(g_ev[k], g_tr[k]) for k in g_ev)  # running statistics included
    assert not torch.equal(ev.samples, tr.samples)  # (scored alike: 2 epochs of 64 images draw no digits)


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_dropout_code_false_leaves_the_code_unmasked(arch):
    """dropoutD with dropout_code: false drops out every hidden layer but the encoder's last:
    the code (what the decoder and the pulling-away term read) is then the same on every call."""
    shape = TINY_DCGAN if arch == "dcgan" else {}
    x = torch.rand(8, 1024) * 2 - 1
    nets = {}
    for code in (True, False):
        cfg = TrialConfig(family="ebgan_pt", dropoutD=True, dropout_code=code, **{**TINY, **shape})
        torch.manual_seed(0)
        _, _, d = build_models(cfg, torch.device("cpu"))
        nets[code] = d.train()
    # mlp nLayerD 2: one encoder layer, so no dropout at all in the encoder; dcgan 4: 3 conv layers
    n_enc = cfg.nLayerD - 1
    assert [sum(isinstance(m, torch.nn.Dropout) for m in nets[c].encoder) for c in (True, False)] == [n_enc, n_enc - 1]
    assert not isinstance(nets[False].encoder[-1], torch.nn.Dropout)
    assert nets[True].state_dict().keys() == nets[False].state_dict().keys()
    torch.manual_seed(1)
    masked = [nets[True](x).code for _ in range(2)]
    assert not torch.equal(*masked) and (masked[0] == 0).float().mean() > 0.3  # half the code dropped
    if arch == "mlp":
        assert torch.equal(nets[False](x).code, nets[False](x).code)


# A pack of two points trained one epoch, checkpointed and restored, in a fresh interpreter: prints
# whether torch._dynamo (or torchvision) was imported, and what it computed.
_EAGER = """
import json, sys
PRE
import torch
from sweep.plan.config import TrialConfig
from sweep.train.backends import backend_for
from sweep.train.data import load_mnist
from sweep.train.loop import start_stack, train_epoch
torch.set_num_threads(1)
base = TrialConfig(family="ebgan", nLayerG=2, nLayerD=2, sizeG=32, sizeD=16, epochs=2, n_train=256, batch_size=32,
                   n_eval=100)
images = load_mnist(sys.argv[1]).train_images
out = {"backends": [], "losses": [], "weights": [], "moments": []}
# stacked (fully-connected, Adam); then the module back-end: DCGAN nets (Adam), and SGD with momentum
for cfgs in ([base.replace(lr=lr) for lr in (1e-3, 1e-4)],
             [base.replace(arch="dcgan", nLayerG=4, nLayerD=4, sizeG=16, sizeD=8, lr=lr) for lr in (1e-3, 1e-4)],
             [base.replace(optimD="sgd", optimG="sgd", sgd_momentum=0.5, lr=lr) for lr in (1e-2, 1e-3)]):
    runs = start_stack(cfgs, images)
    pack = backend_for(runs)
    out["backends"].append(type(pack).__name__)
    metrics = [m for _, m in sorted(train_epoch(pack).items(), key=lambda kv: kv[0].cfg.lr)]
    pack.write_back()
    runs = start_stack(cfgs, images, resume=[r.checkpoint() for r in runs])  # the optimizers' state round trip
    out["losses"].append([[m["loss_d"], m["loss_g"]] for m in metrics])
    out["weights"].append([sum(float(p.detach().double().sum()) for p in r.g.parameters()) for r in runs])
    key = "exp_avg_sq" if cfgs[0].optimG == "adam" else "momentum_buffer"
    out["moments"].append([sum(float(s[key].double().sum()) for s in r.opt_g.state_dict()["state"].values())
                           for r in runs])
print(json.dumps({"dynamo": "torch._dynamo" in sys.modules, "torchvision": "torchvision" in sys.modules, **out}))
"""


def test_training_imports_neither_dynamo_nor_torchvision_and_computes_the_same(data_root):
    """A Ray worker's first trial paid 1.8 s of CPU importing torch._dynamo (torch's optimizers
    import it on first use and at every step, sweep/train/point.py _optimizers_without_dynamo and
    optimizer_step) and the driver 2.5 s importing torchvision to read MNIST (sweep/train/data.py).
    Without them, the same numbers as with dynamo's wrappers in place, on both back-ends."""
    import subprocess
    import sys

    def run(pre: str) -> dict:
        out = subprocess.run([sys.executable, "-c", _EAGER.replace("PRE", pre), str(data_root)], capture_output=True,
                             text=True, timeout=300, cwd=REPO)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    eager, wrapped = run(""), run("import torch._dynamo")
    assert not eager["dynamo"] and not eager["torchvision"]
    assert wrapped["dynamo"]
    assert eager["backends"] == wrapped["backends"] == ["StackedBackend", "ModuleBackend", "ModuleBackend"]
    assert eager["losses"] == wrapped["losses"] and eager["weights"] == wrapped["weights"]
    assert eager["moments"] == wrapped["moments"] and all(m > 0 for ms in eager["moments"] for m in ms)
