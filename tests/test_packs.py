"""Packs: which points share a Tune trial, and that a point trains inside a pack exactly as alone."""
import json
import math

import pytest
import torch

from helpers import FAMILIES, REPO, TINY_DCGAN, cli, gansweep, strip
from sweep.plan.config import TrialConfig
from sweep.plan.disk import checkpoint_bytes, estimate_disk, param_counts
from sweep.plan.grid import parse_preset
from sweep.plan.packs import PACK_VARIES, auto_pack_size, make_packs, shape_key, stacks_of
from sweep.train.loop import run_stack, run_trial

# 32 GAN points of 4 shapes (nLayerG x nLayerD), 8 per shape (optimD x optimG x lr).
GRID_32 = {"seeds": [0], "settings": {"epochs": 2, "batch_size": 32, "n_train": 512, "n_eval": 100},
           "grids": {"gan": {"nLayerG": [2, 3], "nLayerD": [2, 3], "sizeG": [32], "sizeD": [16],
                             "dropoutD": [True], "optimD": ["adam", "sgd"], "optimG": ["adam", "sgd"],
                             "lr": [0.001, 0.0001]}}}


def test_packs_are_whole_stacks_of_one_shape_and_hold_every_point_once():
    trials = parse_preset("p", GRID_32, "t").trials
    packs = make_packs(trials, 4)
    assert len(packs) == 8 and [len(p.points) for p in packs] == [4] * 8
    assert sorted(t.point_id for p in packs for t in p.points) == sorted(t.point_id for t in trials)
    for p in packs:
        assert len({shape_key(t) for t in p.points}) == 1
        assert stacks_of(p.points) == [list(p.points)]
    assert len({p.pack_id for p in packs}) == 8
    assert packs[0].pack_id == "p0000-gan-G2x32-D2x16-drop"
    # 8 points of a shape at k = 3: ceil(8/3) = 3 stacks of near-equal size (3, 3, 2), and
    # the 2-point stacks are not split to fill the 3-point packs
    assert sorted(len(p.points) for p in make_packs(trials, 3)) == [2, 2, 2, 2] + [3] * 8
    # k = 5: stacks of 4 (8 = 4 + 4) and no room for a second one in any pack
    assert [len(p.points) for p in make_packs(trials, 5)] == [4] * 8
    # k = 1: one trial per point, named by the point; k = 16: two whole shapes per pack
    assert [p.pack_id for p in make_packs(trials, 1)] == [t.point_id for t in trials]
    big = make_packs(trials, 16)
    assert len(big) == 2 and [len(stacks_of(p.points)) for p in big] == [2, 2]
    # the same plan and k give the same packs (resume and the ledger rebuild them)
    assert make_packs(trials, 4) == packs


def test_paper_grid_packs():
    """GAN shapes hold 12 points (2 x 2 optimizers x 3 lr); under the paper's rules every
    EBGAN shape holds one. At the auto size (14 for 7,168 points) each pack is one GAN
    shape's stack of 12 and two single EBGAN points: 512 Tune trials. On CPU auto is 1."""
    from sweep.plan.grid import load_preset

    trials = load_preset(REPO / "sweep.yaml", "paper").trials
    assert auto_pack_size(len(trials), "cuda") == 14 and auto_pack_size(len(trials), "cpu") == 1
    packs = make_packs(trials, 14)
    assert len(packs) == 512 and {len(p.points) for p in packs} == {14}
    for p in packs:
        assert sorted(len(s) for s in stacks_of(p.points)) == [1, 1, 12]
        assert p.points[0].family == "gan"
    assert len(make_packs(trials, 12)) == 512 + 1024 // 12 + 1  # EBGAN points 12 a pack, in single stacks
    assert set(PACK_VARIES) == {"optimD", "optimG", "lr", "seed"}


def test_plan_prints_trials_and_disk(tmp_path):
    import yaml

    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump({"presets": {"p": GRID_32}}))
    r = gansweep("plan", "--config", f, "--preset", "p", "--pack", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Tune trials: 8 (--pack 4: packs of up to 4 points)" in r.stdout
    assert "disk: peak" in r.stdout and "final" in r.stdout
    r = gansweep("plan", "--config", f, "--preset", "p", "--pack", "0", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--pack '0'" in r.stderr


def test_disk_estimate_counts_weights_and_optimizer_state_by_hand():
    cfg = TrialConfig(family="gan", nLayerG=2, sizeG=32, nLayerD=2, sizeD=16)
    # G: Linear 100->32 (3,232), BN 32 (64 parameters; running mean, var, count: 65 buffers),
    # Linear 32->1024 (33,792). D: Linear 1024->16 (16,400), Linear 16->1 (17), no BN on its input.
    assert param_counts(cfg) == ((3232 + 64 + 33792, 65), (16400 + 17, 0))
    # Adam: weights + 2 moments per parameter, float32; plus the 64 samples of the point
    assert checkpoint_bytes(cfg) == 4 * (37088 * 3 + 65 + 16417 * 3) + 64 * 1024 + 128
    assert checkpoint_bytes(cfg.replace(optimD="sgd", optimG="sgd")) == 4 * (37088 + 65 + 16417) + 64 * 1024 + 128
    packs = make_packs((cfg, cfg.replace(seed=1)), 2)
    d = estimate_disk(packs, keep_weights=False, slots=1)
    assert d["peak"] == d["final"] + 2 * 2 * checkpoint_bytes(cfg)  # 2 checkpoints kept, 2 points
    # --keep-weights: G's state_dict (parameters and BN buffers) of each point
    assert estimate_disk(packs, keep_weights=True, slots=1)["final"] == d["final"] + 2 * 4 * (37088 + 65)


@pytest.mark.parametrize("family", ["gan", "ebgan", "began"])
def test_the_paper_nets_counted_without_building_them_match_the_nets(family):
    """The disk estimate counts the mlp nets by formula (models/archs.py mlp_param_counts): the same
    counts as the nets built, for every layer count of Table 1 and more, and odd sizes."""
    import torch

    from models.archs import get_arch, mlp_param_counts
    from models.losses import get_family
    from sweep.train.point import build_models

    assert get_arch("mlp").param_counts is mlp_param_counts
    kind = get_family(family).discriminator
    for n_g, n_d, size_g, size_d, z in [(2, 2, 32, 16, 100), (5, 5, 400, 128, 100), (3, 4, 7, 3, 13), (6, 2, 1, 1, 1)]:
        cfg = TrialConfig(family=family, nLayerG=n_g, nLayerD=n_d, sizeG=size_g, sizeD=size_d, z_dim=z)
        with torch.device("meta"):
            _, g, d = build_models(cfg, torch.device("meta"))
        built = tuple((sum(t.numel() for t in m.parameters()), sum(t.numel() for t in m.buffers())) for m in (g, d))
        assert mlp_param_counts(n_g, size_g, z, n_d, size_d, kind) == built == param_counts(cfg), cfg.point_id


# --------------------------------------------------------------------------- equivalence
PACK_TINY = dict(nLayerG=2, nLayerD=2, sizeG=32, sizeD=16, n_train=256, batch_size=32, n_eval=100, epochs=2)


def _neighbours(family: str, arch: str) -> list[TrialConfig]:
    """4 points of one shape that differ in what a pack may vary (EBGANs beyond the paper's rules).
    DCGAN points take 2 epochs of 4 steps: their convolutions cost 10x an mlp step here, and a pack
    trains its DCGAN points one after another, so more steps repeat what the first ones show."""
    shape = {**TINY_DCGAN, "n_train": 128} if arch == "dcgan" else {}
    base = TrialConfig(family=family, dropoutD=True, **{**PACK_TINY, **shape})
    return [base, base.replace(seed=7), base.replace(optimD="sgd", lr=0.01),
            base.replace(optimG="sgd", optimD="sgd", lr=0.0001, seed=2)]


@pytest.fixture
def one_thread():
    """torch on one intra-op thread, as a sweep's trials run (Ray gives each worker
    OMP_NUM_THREADS=1, and --cpus-per-trial defaults to 1); the suite's own restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_point_trains_in_a_pack_exactly_as_alone(family, arch, mnist, scorer, one_thread):
    """Tolerance 0, on one CPU thread. An mlp pack is one stacked model (models/stacked.py) and a
    point alone is a stack of one, so both run the same kernels: batched matmuls, batch norm and
    the stacked Adam compute each point's slice independently, and with one thread a kernel
    computes every slice by the same sequence of operations whatever K is (the one exception,
    bmm's matrix-vector path for a GAN's logit layer, is written as a product and a sum).
    Every point draws from its own RNG streams (data order, noise, init, dropout masks). So 16
    steps (2 epochs of 8; DCGAN 2 of 4) and the scores are bit-identical (on the Intel Xeon with AVX512 this was
    written on, and the AMD machine before it). DCGAN packs train their points one after another: identical too.
    With several threads this is not so: see the next test. On a GPU, cuBLAS may pick another
    algorithm for another batch count: not measured here."""
    points = _neighbours(family, arch)
    packed = run_stack(points, mnist.train_images, scorer)
    for cfg, run in zip(points, packed):
        alone = run_trial(cfg, mnist.train_images, scorer)
        assert strip(run.history) == strip(alone.history), cfg.point_id
        assert torch.equal(run.samples, alone.samples)
    # the neighbours did train differently (the test would pass vacuously otherwise)
    assert len({run.history[-1]["loss_d"] for run in packed}) == 4


# Measured on an Intel Xeon (AVX512) at 2 threads, the four families' _neighbours over 16 steps:
# losses and energies within 1.6e-4 relative (EBGAN-PT's loss_g; the others within 1e-5), scores
# equal, samples 0.02 grey levels apart on average (one BEGAN pixel 16). The bounds keep a margin
# of 6x and 25x.
PACK_RTOL, PACK_SAMPLE_MEAN_ABS = 1e-3, 0.5


@pytest.mark.parametrize("family", FAMILIES)
def test_with_two_threads_a_pack_matches_alone_to_float_rounding(family, mnist, scorer, two_threads):
    """With several threads, a batched matmul is parallelised by its shape: a lone point's
    product (K = 1) may split its long reduction axis (the 1024 pixels) across the threads, a
    pack's splits the K points, so the same sums are added in another order (measured: bmm
    with a 1,024-long inner axis differs between K = 1 and K = 4 at 2 threads on an Intel
    AVX512 CPU, not at 1, 3 or 4 threads; the AMD machine before it showed no difference at 2).
    That is float rounding, not another algorithm: the points agree to PACK_RTOL."""
    points = _neighbours(family, "mlp")
    packed = run_stack(points, mnist.train_images, scorer)
    for cfg, run in zip(points, packed):
        alone = run_trial(cfg, mnist.train_images, scorer)
        assert [h["epoch"] for h in run.history] == [h["epoch"] for h in alone.history] == [1, 2]
        for got, want in zip(strip(run.history), strip(alone.history)):
            for k, v in want.items():
                if v is None or isinstance(v, int):
                    assert got[k] == v, (cfg.point_id, k)
                else:
                    assert got[k] == pytest.approx(v, rel=PACK_RTOL, abs=1e-9), (cfg.point_id, k)
        assert (run.samples.float() - alone.samples.float()).abs().mean() <= PACK_SAMPLE_MEAN_ABS


def _biases_before_batch_norm(net: torch.nn.Module) -> set[str]:
    out = set()
    for seq_name, seq in net.named_children():
        if isinstance(seq, torch.nn.Sequential):
            for i, (a, b) in enumerate(zip(seq[:-1], seq[1:])):
                if isinstance(a, torch.nn.Linear) and isinstance(b, torch.nn.BatchNorm1d):
                    out.add(f"{seq_name}.{i}.bias")
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_the_stacked_step_is_the_module_step(family, optim, mnist):
    """The two back-ends of the one training loop (sweep/train/backends.py): one step of the
    stacked nets and of the point's own nn.Linear / nn.BatchNorm1d / F.dropout / torch.optim
    give the same losses and weights up to float rounding (they differ only in summation
    order: rtol 1e-4; over hundreds of steps GAN training amplifies such differences, as it
    does any)."""
    from sweep.train.backends import ModuleBackend, StackedBackend
    from sweep.train.loop import start_stack, train_epoch

    cfg = TrialConfig(family=family, dropoutD=True, optimD=optim, optimG=optim, lr=0.01,
                      **{**PACK_TINY, "n_train": 32})
    module, = start_stack([cfg], mnist.train_images)
    stacked, = start_stack([cfg], mnist.train_images)
    m_module = train_epoch(ModuleBackend([module]))[module]
    trainer = StackedBackend([stacked])
    m_stacked = train_epoch(trainer)[stacked]
    trainer.write_back()
    for k in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert m_stacked[k] == pytest.approx(m_module[k], rel=1e-4, abs=1e-6), k
    for a, b in ((module.g, stacked.g), (module.d, stacked.d)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            if optim == "adam" and not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue  # Adam's first step is lr * sign(g): rounding flips the sign of g ~ 0 (below)
            if name in _biases_before_batch_norm(a):
                continue  # true gradient 0 (BN removes a shift): rounding noise only
            assert torch.allclose(x.float(), y.float(), rtol=1e-4, atol=1e-6), name
    if optim == "adam":  # the moments (linear in the gradients) went back into the point's torch optimizer
        for a, b in ((module, stacked),):
            for net in ("g", "d"):
                opt_a, opt_b = getattr(a, f"opt_{net}"), getattr(b, f"opt_{net}")
                for (name, pa), pb in zip(getattr(a, net).named_parameters(), getattr(b, net).parameters()):
                    if name in _biases_before_batch_norm(getattr(a, net)):
                        continue
                    ma, mb = opt_a.state[pa]["exp_avg"], opt_b.state[pb]["exp_avg"]
                    assert torch.allclose(ma, mb, rtol=1e-3, atol=1e-4 * float(ma.abs().max())), name


def test_the_stacked_optimizer_is_torch_optim():
    """Adam and SGD over stacked parameters, with a different lr per point and a mixed pack,
    against torch.optim on each point's own tensors, over 5 steps of the same gradients."""
    from sweep.train.backends import StackedOptimizer

    torch.manual_seed(0)

    class Net:  # the slice of StackedNet that StackedOptimizer reads
        def __init__(self, stacked):
            self.stacked = stacked

        def parameters(self):
            return [self.stacked]

        def solo_parameters(self, k):
            return [solos[k]]

        def solo_layout(self, j, t):
            return t

    solos = [torch.randn(6, 5, requires_grad=True) for _ in range(3)]
    kinds, lrs = ["adam", "sgd", "adam"], [0.01, 0.1, 0.001]
    torch_opts = [torch.optim.Adam([p], lr=lr, betas=(0.5, 0.999)) if k == "adam" else torch.optim.SGD([p], lr=lr)
                  for p, k, lr in zip(solos, kinds, lrs)]
    stacked = torch.stack([p.detach() for p in solos]).requires_grad_(True)
    opt = StackedOptimizer(Net(stacked), [torch.optim.SGD([torch.zeros(1)], lr=1.0)] * 3, kinds, lrs, (0.5, 0.999))
    for _ in range(5):
        grads = torch.randn(3, 6, 5)
        for p, g, o in zip(solos, grads, torch_opts):
            p.grad = g.clone()
            o.step()
        stacked.grad = grads.clone()
        opt.step()
    for k in range(3):
        assert torch.allclose(stacked[k], solos[k], rtol=1e-6, atol=1e-6), kinds[k]  # a few float32 ulps


def test_a_diverging_point_leaves_its_neighbours_unchanged(mnist, scorer, one_thread):
    """Bit-identical on one thread, as the test above."""
    base = TrialConfig(family="gan", **{**PACK_TINY, "epochs": 3})
    bad = base.replace(optimD="sgd", optimG="sgd", lr=1e30)  # overflows within the first steps
    points = [base, bad, base.replace(seed=5)]
    runs = run_stack(points, mnist.train_images, scorer)
    assert [r.status for r in runs] == ["ok", "diverged", "ok"]
    assert runs[1].epoch == 1 and runs[1].reason in ("non-finite loss", "non-finite samples")
    for i in (0, 2):
        assert strip(runs[i].history) == strip(run_trial(points[i], mnist.train_images, scorer).history)
        assert len(runs[i].history) == 3


def test_a_pack_checkpoint_holds_each_points_samples_once_and_restores_them(tmp_path, mnist, scorer):
    """A pack's checkpoint is written per stack and epoch and copied by Tune file by file: the scored
    points' samples are in one samples.npz, not also in state.pt, and load_checkpoint puts them back
    (a point not yet scored has none); the callback's reader also reads the older layout."""
    import numpy as np
    from ray.tune import Checkpoint

    from sweep.runner.checkpoint import checkpoint_samples, load_checkpoint, save_checkpoint
    from sweep.train.loop import start_stack

    base = TrialConfig(family="gan", **{**PACK_TINY, "epochs": 1, "n_train": 64})
    done = run_stack([base, base.replace(seed=1)], mnist.train_images, scorer)
    fresh, = start_stack([base.replace(seed=2)], mnist.train_images)  # built, never scored
    points = {r.cfg.point_id: r.checkpoint() for r in [*done, fresh]}
    ids = list(points)
    save_checkpoint(points, tmp_path, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.npz", "state.pt"]
    state = torch.load(tmp_path / "state.pt", weights_only=True)["points"]
    assert [("samples" in st, "G" in st) for st in state.values()] == [(False, False), (False, False), (False, True)]
    back, weights = load_checkpoint(Checkpoint.from_directory(str(tmp_path)), "p", "cpu")
    assert list(back) == ids and back[ids[2]]["samples"] is None and weights == {}
    for r in done:
        assert back[r.cfg.point_id]["samples"].shape == (64, 32, 32)
        assert torch.equal(back[r.cfg.point_id]["samples"], r.samples)
    assert all(torch.equal(back[ids[2]]["G"][k], v) for k, v in fresh.g.state_dict().items())
    assert sorted(checkpoint_samples(tmp_path, ids)) == sorted(ids[:2])
    old = tmp_path / "old"  # a pack checkpoint before samples.npz: samples/<point_id>.npy
    (old / "samples").mkdir(parents=True)
    np.save(old / "samples" / f"{ids[0]}.npy", done[0].samples.numpy())
    assert list(checkpoint_samples(old, ids)) == [ids[0]]
    assert np.array_equal(checkpoint_samples(old, ids)[ids[0]], done[0].samples.numpy())


class FakeTune:
    """What a PackTrial hands Tune, kept: the point ids of each report and copies of their
    checkpoints (under root); get_checkpoint returns `restore`. It also records which points
    each train_stack call trained (`trained`, filled by train_with)."""

    def __init__(self, root, restore=None):
        self.root, self.reports, self.saved, self.restore, self.trained = root, [], [], restore, []

    def report(self, out, checkpoint=None):
        import shutil

        from sweep.record.schema import PACK_POINTS

        self.reports.append([p["point_id"] for p in json.loads(out[PACK_POINTS])])
        if checkpoint is not None:
            dst = self.root / str(id(self)) / f"c{len(self.saved)}-{len(self.reports)}"
            shutil.copytree(checkpoint.path, dst)
            self.saved.append(dst)

    def get_checkpoint(self):
        return self.restore


def train_with(fake: FakeTune, points, data, scorer, monkeypatch, keep_weights: bool = False) -> None:
    """A PackTrial of these points restored and trained through `fake` instead of Tune."""
    import sweep.runner.worker as worker
    from sweep.runner.worker import PackTrial

    train_stack = worker.train_stack

    def recorded(runs, *a, **kw):
        fake.trained.append([r.cfg.point_id for r in runs])
        return train_stack(runs, *a, **kw)
    monkeypatch.setattr(worker, "tune", fake)
    monkeypatch.setattr(worker, "train_stack", recorded)
    trial = PackTrial("p", points, "cpu", {}, keep_weights=keep_weights)
    todo, restored = trial.restore()
    trial.train(todo, restored, scorer, data)


def test_a_quick_stack_followed_by_others_waits_for_the_next_report(tmp_path, mnist, scorer, monkeypatch):
    """A pack of three one-point stacks whose stacks take milliseconds: one report, with one
    checkpoint holding every point's final state and samples (a report is a round trip to the
    driver); with STACK_CHECKPOINT_EVERY_S at 0 each stack reports and saves one, as every scored
    epoch of a stack does. A trial restored from the first stack's checkpoint trains the other
    two only, and still reports all three."""
    from ray.tune import Checkpoint

    import sweep.runner.worker as worker
    from sweep.runner.checkpoint import checkpoint_samples, load_checkpoint
    from sweep.train.point import prepare_data

    base = TrialConfig(family="ebgan", **{**PACK_TINY, "epochs": 1, "n_train": 64})
    points = [base.replace(nLayerG=n) for n in (2, 3, 4)]  # three shapes: three stacks
    ids = [p.point_id for p in points]
    data = prepare_data(mnist.train_images, 64, "cpu")

    def train(fake):
        train_with(fake, points, data, scorer, monkeypatch)

    quick = FakeTune(tmp_path)
    train(quick)
    assert quick.trained == [[i] for i in ids]
    assert quick.reports == [ids] and len(quick.saved) == 1  # one report, its checkpoint has every point
    assert sorted(checkpoint_samples(quick.saved[0], ids)) == sorted(ids)
    assert all(st["epoch"] == 1 for st in load_checkpoint(Checkpoint.from_directory(str(quick.saved[0])), "p",
                                                          "cpu")[0].values())
    monkeypatch.setattr(worker, "STACK_CHECKPOINT_EVERY_S", 0.0)
    each = FakeTune(tmp_path)
    train(each)
    assert each.reports == [ids[:1], ids[1:2], ids] and [p.name for p in each.saved] == ["c0-1", "c1-2", "c2-3"]
    first = Checkpoint.from_directory(str(each.saved[0]))  # the first stack finished, nothing else
    monkeypatch.setattr(worker, "STACK_CHECKPOINT_EVERY_S", 10.0)
    again = FakeTune(tmp_path, restore=first)
    train(again)
    assert again.trained == [ids[1:2], ids[2:]]  # from the second stack
    assert again.reports == [ids] and len(again.saved) == 1


def test_a_pack_restored_finished_keeps_its_weights_in_the_checkpoint_it_reports(tmp_path, mnist, scorer,
                                                                                   monkeypatch):
    """--keep-weights: a trial restored from its pack's final checkpoint (its worker or driver died after
    that report, before Tune ended the trial) trains nothing and reports every point again, with a
    checkpoint that still holds each point's final G, the very tensors of the first checkpoint: the
    driver keeps a point's weights from the trial's last checkpoint. A restored finished point whose
    checkpoint lacks its weights (as gansweep wrote them up to 2026-12) trains again, from scratch, to
    the same weights."""
    import shutil

    from sweep.runner.checkpoint import checkpoint_weights
    from sweep.train.point import prepare_data

    base = TrialConfig(family="gan", **{**PACK_TINY, "epochs": 1, "n_train": 64})
    points = [base, base.replace(lr=1e-4)]  # one stack of two
    ids = [p.point_id for p in points]
    data = prepare_data(mnist.train_images, 64, "cpu")
    first = FakeTune(tmp_path)
    train_with(first, points, data, scorer, monkeypatch, keep_weights=True)
    assert first.trained == [ids] and len(first.saved) == 1
    kept = checkpoint_weights(first.saved[0])
    assert sorted(kept) == sorted(ids)

    def same(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    from ray.tune import Checkpoint

    again = FakeTune(tmp_path, restore=Checkpoint.from_directory(str(first.saved[0])))
    train_with(again, points, data, scorer, monkeypatch, keep_weights=True)
    assert again.trained == [] and again.reports == [ids] and len(again.saved) == 1
    back = checkpoint_weights(again.saved[0])
    assert sorted(back) == sorted(ids) and all(same(back[p], kept[p]) for p in ids)

    lacking = tmp_path / "lacking"  # the final checkpoint without the second point's weights
    shutil.copytree(first.saved[0], lacking)
    (lacking / "weights" / f"{ids[1]}.pt").unlink()
    third = FakeTune(tmp_path, restore=Checkpoint.from_directory(str(lacking)))
    train_with(third, points, data, scorer, monkeypatch, keep_weights=True)
    assert third.trained == [ids] and third.reports == [ids]  # its stack, where the finished point sits out
    back = checkpoint_weights(third.saved[0])
    assert sorted(back) == sorted(ids) and all(same(back[p], kept[p]) for p in ids)


class _Killed(Exception):
    pass


def test_a_pack_resumes_bit_identically(mnist, scorer):
    points = _neighbours("ebgan_pt", "mlp")[:3]
    points = [p.replace(epochs=3) for p in points]
    straight = run_stack(points, mnist.train_images, scorer)
    saved = {}

    def kill_after_epoch_1(reported, make_checkpoint):
        saved["states"] = make_checkpoint()
        raise _Killed
    with pytest.raises(_Killed):
        run_stack(points, mnist.train_images, scorer, on_epoch=kill_after_epoch_1)
    assert [s["epoch"] for s in saved["states"]] == [1, 1, 1]
    resumed = run_stack(points, mnist.train_images, scorer, resume=saved["states"])
    for a, b in zip(straight, resumed):
        assert strip(a.history) == strip(b.history) and len(b.history) == 3
        assert all(math.isfinite(h["i_prime"]) for h in b.history)


# --------------------------------------------------------------------------- through Ray Tune
@pytest.mark.ray
def test_packed_sweep_killed_and_resumed_keeps_every_point_once_on_a_bounded_disk(tmp_path, data_root,
                                                                                     monkeypatch):
    """`run --pack 4` on 32 points of 4 shapes: 8 Tune trials; the driver is SIGKILLed once
    some packs have finished (their checkpoints already deleted), and `resume` finishes the
    rest: one row per point with today's columns, no checkpoint left, <= 1 MB a point."""
    import os
    import signal

    import pandas as pd
    import yaml

    from helpers import assert_ledger_holds, results_with, start, wait_for
    from analysis.load import load_run
    from sweep.train.point import PointRun, to_uint8
    from sweep.record.schema import RESULT_COLUMNS

    monkeypatch.setenv("GANSWEEP_DATA", str(data_root))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    grid = {**GRID_32, "settings": {**GRID_32["settings"], "epochs": 3, "n_train": 1024}}
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump({"presets": {"p": grid}}))
    run = tmp_path / "runs" / "a"
    proc = start("run", "--config", f, "--preset", "p", "--name", "a", "--storage", tmp_path / "runs",
                 "--num-cpus", "2", "--pack", "4", "--keep-weights", cwd=tmp_path)
    wait_for(lambda: results_with(run, 8), 240, "two finished packs", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    r = cli("resume", run, "--num-cpus", "2", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "32 points in 8 trials (packs of up to 4)" in r.stdout

    df = assert_ledger_holds(run)  # every planned point exactly once, rows and curves consistent
    assert list(df.columns) == list(RESULT_COLUMNS) and len(df) == 32 and (df.status == "ok").all()
    trials = [p for p in (run / "tune").iterdir() if p.is_dir()]
    assert len(trials) == 8 and df.trial_id.nunique() == 8
    assert not [f for f in (run / "tune").glob("*/checkpoint_*/*")]  # finished packs keep no checkpoint
    size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    weights = sum(p.stat().st_size for p in (run / "weights").iterdir())
    assert size - weights <= 32 * 1_000_000
    assert sorted(p.stem for p in (run / "weights").iterdir()) == sorted(df.point_id)
    assert sorted(p.stem for p in (run / "samples").iterdir()) == sorted(df.point_id)
    # the kept weights are the point's final G: from its fixed evaluation noise they draw its
    # recorded samples again
    loaded = load_run(run)
    for pid in df.point_id[:4]:
        cfg = TrialConfig(**{k: v.item() if hasattr(v, "item") else v for k, v in
                             df[df.point_id == pid].iloc[0].items() if k in TrialConfig.__dataclass_fields__})
        z = PointRun(cfg, torch.zeros(cfg.n_train, 1024), torch.device("cpu")).eval_z
        with torch.no_grad():
            again = to_uint8(loaded.generator(pid)(z)[:64])
        assert torch.equal(again, torch.from_numpy(loaded.samples(pid))), pid
    curves = pd.read_parquet(run / "curves.parquet")
    assert len(curves) == 32 * 3


@pytest.mark.ray
def test_a_pack_of_several_stacks_trains_them_in_turn_through_tune(tmp_path, data_root, monkeypatch):
    """12 points at --pack 6: two GAN shapes of 4 and four single-point EBGAN shapes make 2
    trials of 3 stacks each; every point gets its row, curve, samples and kept weights."""
    import yaml

    from helpers import assert_ledger_holds

    monkeypatch.setenv("GANSWEEP_DATA", str(data_root))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    grid = {"seeds": [0], "settings": {"epochs": 2, "batch_size": 32, "n_train": 256, "n_eval": 100},
            "grids": {"gan": {"nLayerG": [2], "nLayerD": [2, 3], "sizeG": [32], "sizeD": [16], "dropoutD": [True],
                              "optimD": ["adam", "sgd"], "optimG": ["adam", "sgd"], "lr": [0.001]},
                      "ebgan": {"nLayerG": [2], "nLayerD": [2, 3], "sizeG": [32], "sizeD": [16],
                                "dropoutD": [True, False], "optimD": ["adam"], "optimG": ["adam"], "lr": [0.001]}}}
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump({"presets": {"p": grid}}))
    assert [sorted(len(s) for s in stacks_of(p.points)) for p in make_packs(parse_preset("p", grid, "t").trials, 6)] \
        == [[1, 1, 4], [1, 1, 4]]
    r = cli("run", "--config", f, "--preset", "p", "--name", "a", "--storage", tmp_path / "runs", "--num-cpus", "2",
            "--pack", "6", "--keep-weights", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "12 points in 2 trials (packs of up to 6)" in r.stdout
    run = tmp_path / "runs" / "a"
    df = assert_ledger_holds(run)
    assert len(df) == 12 and (df.status == "ok").all() and df.trial_id.nunique() == 2
    assert (df.epochs_done == 2).all()
    assert sorted(p.stem for p in (run / "samples").iterdir()) == sorted(df.point_id)
    assert sorted(p.stem for p in (run / "weights").iterdir()) == sorted(df.point_id)
    # TensorBoard: each point's two epochs once each, though a pack's last report repeats every
    # point's final report (for the ledger): 12 points x 2 epochs of fid in the 2 trials' files
    from helpers import tensorboard_scalars

    fid = {}
    for events in (run / "tune").glob("*/events.out.tfevents.*"):
        fid.update({tag: steps for tag, steps in tensorboard_scalars(events).items() if tag.endswith("/fid")})
    assert sorted(fid) == sorted(f"ray/tune/{pid}/fid" for pid in df.point_id)
    assert all(len(steps) == 2 and steps[0][0] < steps[1][0] for steps in fid.values()), fid
    # rescore: the kept Gs drawn as the run drew them give the recorded scores (up to the
    # stacked model's float rounding); drawn with batch statistics, a table of their own
    import numpy as np
    import pandas as pd

    from analysis.rescore import rescore

    same = rescore(run, "eval").set_index("point_id").loc[df.point_id]
    assert len(same) == 12 and (same.recorded_sample_bn == "eval").all()
    assert np.allclose(same.i_prime, same.recorded_i_prime, rtol=1e-4, atol=1e-4)
    assert np.allclose(same.fid, same.recorded_fid, rtol=1e-4, atol=1e-3)
    other = pd.read_csv(run / "rescore-sample_bn-eval.csv")
    assert len(other) == 12
    train = rescore(run, "train")
    assert len(train) == 12 and (train.sample_bn == "train").all() and np.isfinite(train.i_prime).all()
