"""sweep.yaml: grids as data, validated completely before anything runs.

    gansweep plan --preset paper

A sweep file holds named presets (top-level keys starting with "_" may hold
YAML anchors that presets reuse). Each preset has one grid per family (the
Table 1 axes, each a non-empty list, and `arch`, [mlp] when left out) or a list
of grids for a family (e.g. one per arch, since sizeG/sizeD count units for
mlp and channels for dcgan), `seeds` (repeats are a grid axis), and
`settings` (training budget, data subset, evaluation sample count, ...; any
TrialConfig setting, see sweep/plan/config.py). `paper_rules: true` (the default)
refuses EBGAN points the paper does not allow (adam/adam, lr 0.001, m = 10).
Beyond the paper, a grid may also list values of the settings in STUDY_AXES
(margin, energy_norm, dropout_code): the margin preset crosses them. `sample: N`
(or --sample N) runs a seeded, stratified N-point subset (sweep/plan/subset.py).
On the command line, --set KEY=VALUE and --seeds change a preset's settings and
seeds without editing the file (`Overrides`; a run's manifest records them).
Without --config, ./sweep.yaml is read, else the copy shipped in this package
(`sweep_file`); its JSON Schema is generated from the tables here (sweep/plan/yaml_schema.py).

Every problem is reported as one line that names the key, e.g.
    sweep.yaml: presets.mini.grids.gan.lr[1]: must be positive, got -0.01
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml

from sweep.plan.config import (AXES, CHOICES, FIELD_TYPES, SETTINGS, STUDY_AXES, TrialConfig, not_positive,
                               paper_rule_violation)
from sweep.errors import UserError
from sweep.plan.subset import COVERED_FAMILY, SAMPLER_VERSION, figure3_cell, stratified_sample

# The sweep file shipped inside the package: a link to the checkout's ./sweep.yaml, so there is
# one copy to edit and the installed command works from any folder.
PACKAGED_SWEEP = Path(__file__).parents[1] / "presets.yaml"
SCHEMA_FILE = Path(__file__).parents[1] / "sweep.schema.json"  # its JSON Schema (sweep/plan/yaml_schema.py)
PRESET_KEYS = {"description", "paper_rules", "seeds", "settings", "grids", "sample", "sample_seed"}
GRID_AXES = tuple(a for a in AXES if a != "family")
# Axes a grid may leave out, and the values they then take. Table 1 has no arch
# axis, so grids written from the paper (and older sweep files) mean arch: [mlp].
OPTIONAL_AXES = {"arch": ["mlp"]}


class ConfigError(UserError):
    pass


@dataclass(frozen=True)
class Overrides:
    """What the command line changes in a preset (--set KEY=VALUE, --seeds): recorded in the
    run's manifest, so resume rebuilds the same points."""

    settings: dict  # setting -> typed value, applied over the preset's `settings` and grids
    seeds: tuple[int, ...] | None = None  # replaces the preset's `seeds`

    def record(self) -> dict | None:
        return None if not self.settings and self.seeds is None else {
            "set": dict(self.settings), "seeds": None if self.seeds is None else list(self.seeds)}

    @classmethod
    def from_record(cls, rec: dict | None) -> "Overrides":
        rec = rec or {}
        seeds = rec.get("seeds")
        return cls(dict(rec.get("set") or {}), None if seeds is None else tuple(seeds))

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.settings.items()]
        if self.seeds is not None:
            parts.append(f"seeds={','.join(map(str, self.seeds))}")
        return ", ".join(parts)


NO_OVERRIDES = Overrides({})


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    trials: tuple[TrialConfig, ...]  # the grid points to run (all, or the sample), in a fixed order
    settings: dict  # the preset's settings block as written
    grid_size: int = 0  # points of the whole grid (== len(trials) unless sampled)
    sample: int | None = None  # N of a stratified sample (sweep/plan/subset.py), or None: the whole grid
    sample_seed: int = 0  # the sample's seed
    sampler: int = SAMPLER_VERSION  # the version of sweep/plan/subset.py that draws it
    overrides: Overrides = NO_OVERRIDES  # --set / --seeds given on the command line
    gan_cells: int = 0  # Figure 3's (optimD, optimG, lr) cells of the whole grid's GANs (a sample covers them)

    @property
    def scope(self) -> str:
        """'the 7,168-point grid' or 'a 96-point sample (seed 0) of the 7,168-point grid'."""
        whole = f"the {self.grid_size:,}-point grid"
        return whole if self.sample is None else f"a {self.sample:,}-point sample (seed {self.sample_seed}) of {whole}"

    def sample_record(self) -> dict | None:
        """What the manifest keeps, so resume rebuilds the same points."""
        return None if self.sample is None else {"n": self.sample, "seed": self.sample_seed,
                                                 "grid_size": self.grid_size, "sampler": self.sampler}

    def counts(self) -> dict[str, int]:
        """Trials per model (family, or family-arch for non-mlp archs), in grid order."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.model] = out.get(t.model, 0) + 1
        return out


def sweep_file(config: str | None) -> Path:
    """The sweep file a command reads: --config FILE, else ./sweep.yaml when there is one, else the
    packaged copy. Commands name it in their output (`source_name`): two folders can mean two files."""
    if config is not None:
        return Path(config)
    local = Path("sweep.yaml")
    return local if local.is_file() else PACKAGED_SWEEP


def source_name(path: Path) -> str:
    """How output names a sweep file: './sweep.yaml', 'the sweep file shipped with gansweep', or its path."""
    if Path(path) == PACKAGED_SWEEP:
        return "the sweep file shipped with gansweep (`gansweep init` writes an editable copy)"
    return f"./{path}" if not Path(path).is_absolute() and "/" not in str(path) else str(path)


def parse_overrides(pairs: list[str], seeds: str | None) -> Overrides:
    """--set KEY=VALUE (VALUE read as a YAML scalar, so 4, 1e-3, true, normal) and --seeds 0,1,2,
    checked like the sweep file's settings and seeds. One line (exit 2) on the first problem."""
    settings: dict = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"--set {pair}: expected KEY=VALUE, e.g. --set epochs=4")
        if key in AXES or key == "seed":
            raise ConfigError(f"--set {pair}: {key} is a grid axis; change it in the preset's grids "
                              "(`gansweep init` writes an editable sweep file)" + (", or use --seeds" if key == "seed"
                                                                                 else ""))
        if key not in SETTINGS:
            raise ConfigError(f"--set {pair}: unknown setting {key!r}; settings are: {', '.join(SETTINGS)}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        if not _type_ok(value, FIELD_TYPES[key]):
            raise ConfigError(f"--set {pair}: expected {FIELD_TYPES[key]}, got {text!r}")
        settings[key] = float(value) if FIELD_TYPES[key] == "float" else value
    parsed = None
    if seeds is not None:
        try:
            parsed = tuple(int(x) for x in seeds.split(","))
        except ValueError:
            raise ConfigError(f"--seeds {seeds}: expected integers separated by commas, e.g. 0,1,2") from None
        if any(x < 0 for x in parsed) or len(set(parsed)) != len(parsed):
            raise ConfigError(f"--seeds {seeds}: expected distinct non-negative integers")
    return Overrides(settings, parsed)


def _type_ok(value, type_name: str) -> bool:
    if type_name == "bool":
        return isinstance(value, bool)
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def load_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such sweep file (pass --config FILE)")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "malformed YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("presets"), dict) or not doc["presets"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty 'presets' mapping at the top")
    # Top-level keys starting with "_" hold YAML anchors for reuse; anything else is a typo.
    unknown = sorted(str(k) for k in doc if k != "presets" and not str(k).startswith("_"))
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r} (only 'presets' and "
                          "'_anchors')")
    return doc


def load_preset(path: str | Path, name: str, sample: int | None = None, sample_seed: int | None = None,
                sampler: int = SAMPLER_VERSION, overrides: Overrides = NO_OVERRIDES) -> Preset:
    """A preset of a sweep file; `sample` / `sample_seed` (--sample, --sample-seed) override its own;
    `sampler`: the sweep/plan/subset.py version that draws it (a run's manifest records its own);
    `overrides`: --set and --seeds."""
    doc = load_file(path)
    presets = doc["presets"]
    if name not in presets:
        raise ConfigError(f"{path}: unknown preset {name!r}; presets are: {', '.join(presets)}")
    return parse_preset(name, presets[name], where=f"{Path(path).name}: presets.{name}", sample=sample,
                        sample_seed=sample_seed, sampler=sampler, overrides=overrides)


def parse_preset(name: str, body, where: str, sample: int | None = None, sample_seed: int | None = None,
                 sampler: int = SAMPLER_VERSION, overrides: Overrides = NO_OVERRIDES) -> Preset:
    def fail(key: str, msg: str):
        # a problem with a command-line override is named as the user wrote it
        setting = key.removeprefix("settings.")
        if setting in overrides.settings:
            raise ConfigError(f"--set {setting}={overrides.settings[setting]}: {msg}")
        if key == "seeds" and overrides.seeds is not None:
            raise ConfigError(f"--seeds: {msg}")
        raise ConfigError(f"{where}.{key}: {msg}" if key else f"{where}: {msg}")

    if not isinstance(body, dict):
        fail("", "a preset must be a mapping")
    for key in body:
        if key not in PRESET_KEYS:
            fail(key, f"unknown key; a preset has {', '.join(sorted(PRESET_KEYS))}")
    for key in ("grids", "seeds"):
        if key not in body:
            fail(key, "missing")

    paper_rules = body.get("paper_rules", True)
    if not isinstance(paper_rules, bool):
        fail("paper_rules", f"expected true or false, got {paper_rules!r}")

    settings = body.get("settings") or {}
    if not isinstance(settings, dict):
        fail("settings", "expected a mapping of setting: value")
    settings = {**settings, **overrides.settings}
    for key, value in settings.items():
        if key not in SETTINGS:
            fail(f"settings.{key}", f"unknown setting; settings are: {', '.join(SETTINGS)}")
        if not _type_ok(value, FIELD_TYPES[key]):
            fail(f"settings.{key}", f"expected {FIELD_TYPES[key]}, got {value!r}")

    seeds = body["seeds"] if overrides.seeds is None else list(overrides.seeds)
    if not isinstance(seeds, list) or not seeds:
        fail("seeds", "expected a non-empty list of seeds")
    for i, s in enumerate(seeds):
        if not _type_ok(s, "int") or s < 0:
            fail(f"seeds[{i}]", f"expected a non-negative integer, got {s!r}")
    if len(set(seeds)) != len(seeds):
        fail("seeds", "duplicate seeds")

    grids = body["grids"]
    if not isinstance(grids, dict) or not grids:
        fail("grids", "expected a non-empty mapping family: axes")
    trials: list[TrialConfig] = []
    for family, family_grids in grids.items():
        if family not in CHOICES["family"]:
            fail(f"grids.{family}", f"unknown family; families are {', '.join(CHOICES['family'])}")
        # A family's grid may be a list of grids: one per arch, whose sizes mean different things.
        if isinstance(family_grids, list):
            if not family_grids:
                fail(f"grids.{family}", "empty list: give at least one grid")
            parts = [(f"grids.{family}[{i}]", axes) for i, axes in enumerate(family_grids)]
        else:
            parts = [(f"grids.{family}", family_grids)]
        seen: dict[str, str] = {}
        for g, axes in parts:
            for cfg in _expand(family, axes, seeds, settings, g, fail):
                if cfg.point_id in seen:
                    fail(g, f"point {cfg.point_id} is also in {seen[cfg.point_id]}")
                seen[cfg.point_id] = g
                if paper_rules:
                    why = paper_rule_violation(cfg)
                    if why and why.split(":")[0] in overrides.settings:  # e.g. --set margin=5 on EBGANs
                        fail(f"settings.{why.split(':')[0]}", why.split(": ", 1)[1] + "; the preset keeps "
                             "the paper's rules (paper_rules: false in an editable copy lifts them)")
                    if why:
                        fail(g, f"{why}; set paper_rules: false to explore beyond the paper")
                trials.append(cfg)
    n, seed = _sample_args(body, sample, sample_seed, len(trials), fail)
    chosen = tuple(trials) if n is None else stratified_sample(tuple(trials), n, seed, sampler)
    return Preset(name, str(body.get("description", "")), chosen, dict(settings), len(trials), n, seed, sampler,
                  overrides, len({figure3_cell(t) for t in trials if t.family == COVERED_FAMILY}))


def _sample_args(body: dict, sample, sample_seed, grid_size: int, fail) -> tuple[int | None, int]:
    """(N or None, seed) of a preset's sample: the command line's, else the file's."""
    def check(key: str, value, lo: int, from_cli: bool):
        if value is None:
            return
        problem = None
        if not _type_ok(value, "int") or value < lo:
            problem = f"expected an integer >= {lo}, got {value!r}"
        elif key == "sample" and value > grid_size:
            problem = f"{value} points asked, but the grid has {grid_size}"
        if problem and from_cli:
            raise ConfigError(f"--{key.replace('_', '-')} {value}: {problem}")
        if problem:
            fail(key, problem)

    n = sample if sample is not None else body.get("sample")
    seed = sample_seed if sample_seed is not None else body.get("sample_seed", 0)
    check("sample", n, 1, sample is not None)
    check("sample_seed", seed, 0, sample_seed is not None)
    return n, seed


def _expand(family: str, axes, seeds: list, settings: dict, g: str, fail) -> list[TrialConfig]:
    """Every point of one grid (axes: axis -> list of values), checked axis by axis."""
    if not isinstance(axes, dict):
        fail(g, "expected a mapping of axis: [values]")
    for axis in axes:
        if axis not in GRID_AXES and axis not in STUDY_AXES:
            fail(f"{g}.{axis}", f"unknown axis; axes are: {', '.join(GRID_AXES)} (and, beyond the paper: "
                                f"{', '.join(STUDY_AXES)})")
        if axis in STUDY_AXES and axis in settings:
            # (a --set of it is reported as the user's --set, by fail)
            fail(f"settings.{axis}", f"the preset's grid {g} varies {axis}: give it in one place")
    study = [a for a in STUDY_AXES if a in axes]  # settings this grid varies
    axes = {**OPTIONAL_AXES, **axes}
    for axis in GRID_AXES + tuple(study):
        if axis not in axes:
            fail(f"{g}.{axis}", "missing axis")
        values = axes[axis]
        if not isinstance(values, list):
            fail(f"{g}.{axis}", f"expected a list of values, got {values!r}")
        if not values:
            fail(f"{g}.{axis}", "empty axis: give at least one value")
        for i, v in enumerate(values):
            if not _type_ok(v, FIELD_TYPES[axis]):
                fail(f"{g}.{axis}[{i}]", f"expected {FIELD_TYPES[axis]}, got {v!r}")
            if (why := not_positive(axis, v)) is not None:
                fail(f"{g}.{axis}[{i}]", why)
        if len(set(values)) != len(values):
            fail(f"{g}.{axis}", "duplicate values")
    out = []
    names = GRID_AXES + tuple(study) + ("seed",)
    for combo in itertools.product(*(axes[a] for a in GRID_AXES + tuple(study)), seeds):
        point = {k: (float(v) if FIELD_TYPES[k] == "float" else v) for k, v in zip(names, combo)}
        fields = {**point, "family": family, **{k: (float(v) if FIELD_TYPES[k] == "float" else v)
                                                for k, v in settings.items()}}
        out.append(_make(fields, fail, g, study))
    return out


def _make(fields: dict, fail, where: str, study: list[str]) -> TrialConfig:
    try:
        return TrialConfig(**fields)
    except ValueError as e:
        key, _, msg = str(e).partition(": ")
        if key in SETTINGS and key not in study:
            fail(f"settings.{key}", msg)
        fail(f"{where}.{key}", msg)
        raise  # unreachable: fail raises


def network_macs(cfg: TrialConfig) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass of G and of D, per sample: the arch's own
    count (models/archs.py) for the discriminator kind of the family (models/losses.py)."""
    # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
    from models.archs import get_arch
    from models.losses import get_family

    return get_arch(cfg.arch).macs(cfg, get_family(cfg.family).discriminator)


def flops_by_model(trials) -> dict[str, float]:
    """model -> estimated FLOPs of its trials (`gansweep plan`'s table)."""
    out: dict[str, float] = {}
    for t in trials:
        out[t.model] = out.get(t.model, 0.0) + estimate_flops(t)
    return out


CLASSIFIER_MACS = 9.6e6  # the scorer's classifier (models/classifier.py), per image


def train_flops_per_step(cfg: TrialConfig) -> float:
    """FLOPs of one training step (a batch), 2 a MAC: G forward (MG); D step: D forward on real
    and fake, backward on both (6 MD); G step: D forward and backward to its input on the fake
    batch (2 MD), or on the joint batch with `d_batch: joint` (4 MD), G backward (2 MG)."""
    mg, md = network_macs(cfg)
    return 2.0 * cfg.batch_size * (3 * mg + (10 if cfg.d_batch == "joint" else 8) * md)


def estimate_flops(cfg: TrialConfig) -> float:
    """Approximate FLOPs of one trial (training + scoring), from MAC counts: every step's
    (train_flops_per_step), then G forward and the classifier per evaluated sample. Batch norm
    and activations are not counted."""
    mg, _ = network_macs(cfg)
    train = cfg.epochs * (cfg.n_train // cfg.batch_size) * train_flops_per_step(cfg)
    evals = -(-cfg.epochs // cfg.eval_every)
    score = 2 * evals * cfg.n_eval * (mg + CLASSIFIER_MACS)
    return float(train + score)
