"""A GAN family from one file outside the package: registered, planned with the right FLOPs,
trained in a real sweep, and drawn in the report under its own label and colour."""
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import REPO, cli

# The whole recipe of docs/extending.md's "Your own GAN family": one file, one registration.
LSGAN = '''
"""Least-squares GAN (Mao et al. 2017): D's logit regressed to 1 on data and 0 on samples."""
from models.losses import Family, register_family


def d_loss(real, fake, hp, state=None):
    return 0.5 * (real.score - 1).pow(2).mean(-1) + 0.5 * fake.score.pow(2).mean(-1)  # (K,) or scalar


def g_loss(fake, hp, state=None):
    return 0.5 * (fake.score - 1).pow(2).mean(-1)


register_family(Family("lsgan", "logit", d_loss, g_loss, "Least-squares GAN", label="LSGAN", color="#8c564b"))
'''
SWEEP = """
presets:
  t:
    seeds: [0]
    settings: {epochs: 2, batch_size: 32, n_train: 1024, n_eval: 100}
    grids:
      lsgan: {nLayerG: [2], nLayerD: [2], sizeG: [32], sizeD: [16], dropoutD: [false],
              optimD: [adam], optimG: [adam, sgd], lr: [0.001]}
      gan: {nLayerG: [2], nLayerD: [2], sizeG: [32], sizeD: [16], dropoutD: [false],
            optimD: [adam], optimG: [adam], lr: [0.001]}
"""


@pytest.fixture
def plugin(tmp_path):
    """lsgan.py in a folder of its own, loaded in this process; unregistered afterwards."""
    from models import registry
    from models.losses import FAMILIES

    f = tmp_path / "plugins" / "lsgan.py"
    f.parent.mkdir()
    f.write_text(LSGAN)
    registry.load_plugins([str(f)])
    yield f
    FAMILIES.unregister("lsgan")
    registry._loaded.remove(str(f.resolve()))
    sys.modules.pop("gansweep_plugin_lsgan", None)


def test_a_plugin_family_is_a_choice_with_its_own_flop_count(plugin):
    from models.losses import get_family
    from sweep.plan.config import CHOICES, TrialConfig, paper_rule_violation
    from sweep.plan.grid import estimate_flops, network_macs

    assert CHOICES["family"] == ("gan", "ebgan", "ebgan_pt", "began", "lsgan")
    fam = get_family("lsgan")
    assert (fam.label, fam.color, fam.discriminator) == ("LSGAN", "#8c564b", "logit")
    cfg = TrialConfig(family="lsgan", nLayerG=2, nLayerD=2, sizeG=32, sizeD=16, epochs=2, batch_size=32,
                      n_train=1024, n_eval=100, optimD="sgd", lr=0.1)
    assert paper_rule_violation(cfg) is None  # no paper rule of its own
    # by hand: G 100*32 + 32*1024 MACs; a logit D 1024*16 + 16*1 (an auto-encoder's would end in 16*1024)
    mg, md = 100 * 32 + 32 * 1024, 1024 * 16 + 16
    assert network_macs(cfg) == (mg, md)
    samples = 2 * (1024 // 32) * 32
    assert cfg.d_batch == "joint"  # a logit family's choice: its G step runs D on the real batch too
    assert estimate_flops(cfg) == 2 * samples * (3 * mg + 10 * md) + 2 * 2 * 100 * (mg + 9.6e6)


def test_registration_refuses_bad_entries(plugin):
    from models.losses import Family, register_family
    from models.registry import PluginError

    with pytest.raises(PluginError, match="lower-case letters"):
        register_family(Family("ls-gan", "logit", None, None, "x"))
    with pytest.raises(PluginError, match="'lsgan' is already registered"):
        register_family(Family("lsgan", "logit", None, None, "another"))
    with pytest.raises(PluginError, match="discriminator 'energy' is not one of logit, autoencoder"):
        Family("wgan", "energy", None, None, "x")


def test_a_broken_plugin_is_one_line(tmp_path):
    (tmp_path / "bad.py").write_text("import no_such_module_here\n")
    for source, text in ((tmp_path / "bad.py", "plugin " + str(tmp_path / "bad.py") + ": ModuleNotFoundError"),
                         (tmp_path / "gone.py", "no such file")):
        r = cli("plan", "--plugin", source, "--config", REPO / "sweep.yaml", cwd=tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert text in r.stderr


def test_the_plan_of_a_plugin_family(tmp_path, plugin):
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    r = cli("plan", "--plugin", plugin, "--preset", "t", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^lsgan\s+2\s", r.stdout, re.M) and re.search(r"^gan\s+1\s", r.stdout, re.M)
    without = cli("plan", "--preset", "t", cwd=tmp_path)  # without the plugin the family is unknown
    assert without.returncode == 2 and "grids.lsgan: unknown family" in without.stderr


def test_an_installed_plugin_is_found_by_its_entry_point(tmp_path):
    """A package that declares a `gansweep.families` entry point: no --plugin needed. (A folder on
    PYTHONPATH with a .dist-info is what pip install leaves; importlib.metadata reads the same.)"""
    site = tmp_path / "site"
    (site / "my_gans").mkdir(parents=True)
    (site / "my_gans" / "__init__.py").write_text("")
    (site / "my_gans" / "lsgan.py").write_text(LSGAN)
    info = site / "my_gans-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-gans\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gansweep.families]\nlsgan = my_gans.lsgan\n")
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    r = cli("plan", "--preset", "t", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^lsgan\s+2\s", r.stdout, re.M)


def _share_of_fill(png: Path, hex_color: str, alpha: float = 0.45) -> float:
    """Share of a PNG's pixels of a histogram fill (and legend patch) of this colour: the colour at
    figures.py's fill alpha over white, within 3 levels."""
    import matplotlib.image as mpimg

    img = (mpimg.imread(png)[..., :3] * 255).round()
    color = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    target = 255 - alpha * (255 - color)
    return float((np.abs(img - target).max(-1) <= 3).mean())


@pytest.mark.ray
def test_a_plugin_family_sweeps_and_reports(tmp_path, data_root, plugin, monkeypatch):
    monkeypatch.setenv("GANSWEEP_DATA", str(data_root))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    r = cli("run", "--plugin", plugin, "--preset", "t", "--name", "p", "--num-cpus", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "p"
    df = pd.read_parquet(run / "results.parquet")
    assert sorted(df.family) == ["gan", "lsgan", "lsgan"] and (df.status == "ok").all()
    lsgan = df[df.family == "lsgan"]
    # an LSGAN loss is a mean of squares halved: D's at least 0, and no softplus (GAN) value
    assert (lsgan.loss_d >= 0).all() and (lsgan.loss_g >= 0).all()
    assert not np.allclose(lsgan.loss_d.values, df[df.family == "gan"].loss_d.values[0])

    # the report, in a fresh process, finds the plugin through the run's manifest
    rep = cli("report", run, cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-3000:]
    html = (run / "report" / "report.html").read_text()
    assert "LSGAN" in html
    fig2 = run / "report" / "figure2.png"
    assert _share_of_fill(fig2, "#8c564b") > 0.0003  # the plugin's brown: three legend patches at least
    assert _share_of_fill(fig2, "#d62728") > 0.0003  # GAN's red beside it
    assert _share_of_fill(fig2, "#1f77b4") == 0.0  # and no EBGAN blue: there is no EBGAN run
