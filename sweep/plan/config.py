"""One trial's fully resolved configuration: the grid point plus every setting.

Table 1 of the paper gives the grid axes (family, nLayerG, nLayerD, sizeG,
sizeD, dropoutD, optimD, optimG, lr); `arch` adds DCGAN-style convolutional
networks beside the paper's fully-connected ones. Everything the paper leaves open is a
named setting below with its documented default; every field is stored in
every result row, so any score can be traced to exactly what produced it.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, fields

AXES = ("family", "arch", "nLayerG", "nLayerD", "sizeG", "sizeD", "dropoutD", "optimD", "optimG", "lr")
# Settings a grid may also vary, beyond the paper (the margin preset): a point whose value
# differs from the default says so in its point_id, so points that differ only there stay distinct.
# name -> how a point_id spells a value other than the default.
STUDY_AXES = {
    "margin": lambda v: f"m{v:g}",
    "energy_norm": str,
    "dropout_code": lambda v: "codedrop" if v else "codekept",
    "d_batch": lambda v: {"joint": "jointbn", "separate": "sepbn"}[v],
}


@dataclass(frozen=True)
class TrialConfig:
    # --- grid axes (Table 1) ---
    family: str = "ebgan"  # the losses: the paper's GAN, EBGAN, EBGAN-PT, and BEGAN (plugins add more)
    arch: str = "mlp"  # the networks: mlp (the paper's fully-connected nets), dcgan (DCGAN-style conv nets)
    nLayerG: int = 3  # weight layers in G (2..5 in the paper; dcgan: 2..6)
    nLayerD: int = 2  # weight layers in D; mlp EBGANs: encoder + 1 decoder layer (dcgan: a mirrored decoder)
    sizeG: int = 400  # units per hidden layer of G (dcgan: channels of its widest layer)
    sizeD: int = 128  # units per hidden layer of D (dcgan: channels of its widest layer)
    dropoutD: bool = False  # dropout after D's hidden layers
    optimD: str = "adam"  # adam | sgd
    optimG: str = "adam"  # adam | sgd
    lr: float = 0.001  # learning rate of both optimizers
    seed: int = 0  # seeds weights, data order, noise and evaluation noise

    # --- settings the paper leaves open (documented defaults) ---
    epochs: int = 10  # passes over the training subset
    batch_size: int = 64  # samples per optimizer step, for D and G alike
    n_train: int = 60000  # training images used (the first n_train of MNIST's training set)
    z_dim: int = 100  # generator noise dimension
    z_dist: str = "uniform"  # uniform on [-1, 1] (as DCGAN) | normal
    dropout_rate: float = 0.5  # dropout probability when dropoutD is true
    dropout_code: bool = True  # with dropoutD, auto-encoder Ds also drop out their code (the encoder's last layer)
    d_batch: str = "auto"  # D's batch norm: auto (the family's and arch's) | joint (real + generated in one pass) | separate
    adam_beta1: float = 0.5  # Adam beta1 (the DCGAN / EBGAN code value)
    adam_beta2: float = 0.999  # Adam beta2
    sgd_momentum: float = 0.0  # SGD momentum (plain SGD unless set)
    energy_norm: str = "auto"  # auto (the family's paper: EBGAN l2, BEGAN l1) | l2 | l2_squared | mse | l1
    margin: float = 10.0  # EBGAN hinge margin m (the paper: 10, not tuned)
    pt_weight: float = 0.1  # weight of the pulling-away term (the paper: 0.1)
    began_gamma: float = 0.5  # BEGAN diversity ratio gamma (the BEGAN paper: 0.3 to 0.7)
    began_lambda_k: float = 0.001  # BEGAN gain of the k_t update (the BEGAN paper: 0.001)
    n_eval: int = 10000  # generated samples scored after every epoch (fixed noise)
    sample_bn: str = "eval"  # G's batch norm when sampling for scores: eval (running stats) | train (batch stats)
    eval_every: int = 1  # score every this many epochs (the last epoch is always scored)
    prob_eps: float = 1e-12  # probability clamp inside I' and IS
    coverage_min_frac: float = 0.01  # share of argmaxes for a digit class to count as covered
    tf32: bool = False  # allow TF32 matmuls and convolutions on CUDA (Ampere+: faster, ~1e-3 precision); off: fp32

    def __post_init__(self):
        problems = validate(self)
        if problems:
            raise ValueError(problems[0])
        # "auto" settings are stored resolved, so every result row names what was actually used.
        for name, value in auto_defaults(self.family, self.arch).items():
            if getattr(self, name) == "auto":
                object.__setattr__(self, name, value)

    def replace(self, **changes) -> "TrialConfig":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        # every field is a scalar: dataclasses.asdict's recursive deep copy cost 2.5% of a small trial
        return {name: getattr(self, name) for name in FIELD_NAMES}

    @property
    def model(self) -> str:
        """What the report compares: the family, plus the arch when it is not mlp."""
        return model_name(self.family, self.arch)

    @functools.cached_property  # a frozen config's name never changes; a worker asked for it 9 times a point
    def point_id(self) -> str:
        """A readable, unique name for the grid point (family, axes, seed)."""
        arch = "" if self.arch == "mlp" else f"-{self.arch}"  # mlp ids predate the arch axis
        return (f"{self.family}{arch}-G{self.nLayerG}x{self.sizeG}-D{self.nLayerD}x{self.sizeD}"
                f"-{'drop' if self.dropoutD else 'nodrop'}-{self.optimD}.{self.optimG}"
                f"-lr{self.lr:g}{self._study_tag()}-s{self.seed}")

    def _study_tag(self) -> str:
        """'-m5-l2_squared-codekept' for the STUDY_AXES that differ from their defaults ('' for the paper's).
        Against the family's defaults, not the arch's (auto_defaults): ids written before an arch had
        its own d_batch choice keep their spelling (a DCGAN GAN with separate batches is '-sepbn')."""
        tag = ""
        for name, spell in STUDY_AXES.items():
            default = family_defaults(self.family).get(name, _DEFAULTS[name])
            if getattr(self, name) != default:
                tag += f"-{spell(getattr(self, name))}"
        return tag


def family_defaults(family: str) -> dict:
    """What the settings left at "auto" resolve to for a family (models/losses.py `Family`):
    its paper's energy norm, and how its D's batch norm sees real and generated images."""
    # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
    from models.losses import get_family

    fam = get_family(family)
    return {"energy_norm": fam.energy, "d_batch": fam.d_batch}


def auto_defaults(family: str, arch: str) -> dict:
    """What "auto" settings resolve to for a point: the family's (family_defaults), but d_batch as the
    arch says for the family's kind of D where it says (models/archs.py Arch.d_batch)."""
    # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
    from models.archs import get_arch
    from models.losses import get_family

    by_kind = dict(get_arch(arch).d_batch)
    out = family_defaults(family)
    out["d_batch"] = by_kind.get(get_family(family).discriminator, out["d_batch"])
    return out


# The version of what "auto" resolves to, recorded in every manifest (`auto_rules`): 1 resolved by
# family only; 2 lets an arch choose d_batch (a DCGAN GAN: separate). A run started under another
# version is refused where its unfinished points would now train otherwise (RunDir.check_defaults).
AUTO_RULES = 2


def resolve(family: str, arch: str, name: str, value, rules: int = AUTO_RULES):
    """A setting's value as a point trains with it ("auto" -> its family's and arch's choice, or under
    version 1 of the rules its family's alone)."""
    auto = auto_defaults(family, arch) if rules >= 2 else family_defaults(family)
    return auto[name] if value == "auto" and name in auto else value


def model_name(family: str, arch: str) -> str:
    """"ebgan" for the paper's fully-connected EBGAN, "ebgan-dcgan" for the conv one."""
    return family if arch == "mlp" else f"{family}-{arch}"


@functools.cache
def field_docs() -> dict[str, str]:
    """Field name -> the comment written beside it in TrialConfig above (the one place a field is
    documented: `gansweep trial --help` and the sweep file's JSON Schema read it from here)."""
    import inspect
    import re

    src = inspect.getsource(TrialConfig)
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+): \w+ = [^#\n]+#(.*)$", src, re.M)}


_DEFAULTS = {f.name: f.default for f in fields(TrialConfig)}
# Settings whose default changed, and the value that runs started before the change trained
# with. A run's manifest records the defaults it started with (`setting_defaults`); one written
# before gansweep recorded them trained with these, so its plan is rebuilt with them.
LEGACY_DEFAULTS = {"d_batch": "separate"}


def setting_defaults() -> dict:
    """Every setting's default as this code declares it (what a new run's manifest records)."""
    return {name: _DEFAULTS[name] for name in SETTINGS}
FIELD_NAMES = tuple(f.name for f in fields(TrialConfig))
FIELD_TYPES = {f.name: f.type for f in fields(TrialConfig)}
SETTINGS = tuple(n for n in FIELD_NAMES if n not in AXES and n != "seed")

class _Choices(Mapping):
    """Field -> its allowed values. `family` and `arch` are read from their registries
    (models/losses.py, models/archs.py) on every lookup, so a plugin's entries count; `d_batch` from
    models/networks.py's D_BATCHES (imported then: the plan is read without torch)."""

    _fixed = {
        "optimD": ("adam", "sgd"),
        "optimG": ("adam", "sgd"),
        "z_dist": ("uniform", "normal"),
        "energy_norm": ("auto", "l2", "l2_squared", "mse", "l1"),
        "sample_bn": ("eval", "train"),
    }

    def __getitem__(self, name: str) -> tuple[str, ...]:
        if name == "family":
            # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
            from models.losses import FAMILIES

            return tuple(FAMILIES)
        if name == "arch":
            # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
            from models.archs import ARCHS

            return tuple(ARCHS)
        if name == "d_batch":  # the ways models/networks.py runs D, and auto (the family's)
            # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
            from models.networks import D_BATCHES

            return ("auto", *D_BATCHES)
        return self._fixed[name]

    def __contains__(self, name) -> bool:  # without Mapping's: a KeyError per other field (validate())
        return name in ("family", "arch", "d_batch") or name in self._fixed

    def __iter__(self):
        return iter(("family", "arch", "d_batch", *self._fixed))

    def __len__(self):
        return 2 + len(self._fixed)


CHOICES = _Choices()
# (minimum, maximum or None) for numeric fields; checked before anything runs.
BOUNDS = {
    "nLayerG": (2, None), "nLayerD": (2, None), "sizeG": (1, None), "sizeD": (1, None),
    "seed": (0, None), "epochs": (1, None), "batch_size": (2, None), "n_train": (2, 60000),
    "z_dim": (1, None), "n_eval": (10, None), "eval_every": (1, None),
    "dropout_rate": (0.0, 0.99), "adam_beta1": (0.0, 0.9999), "adam_beta2": (0.0, 0.9999),
    "sgd_momentum": (0.0, 0.9999), "margin": (0.0, None), "pt_weight": (0.0, None),
    "prob_eps": (1e-30, 0.01), "coverage_min_frac": (0.0, 1.0),
    "began_gamma": (0.0, 1.0), "began_lambda_k": (0.0, 1.0),
}
POSITIVE = ("lr",)  # fields that must be above 0 (not at it): the one home of this rule


def not_positive(name: str, value) -> str | None:
    """Why a value of a POSITIVE field is refused ("must be positive, got 0"), or None."""
    return f"must be positive, got {value!r}" if name in POSITIVE and not value > 0 else None


def validate(cfg: TrialConfig) -> list[str]:
    """Human-readable problems with a config, one line each (empty when valid)."""
    out = []
    for name in FIELD_NAMES:
        value = getattr(cfg, name)
        kind = {"int": int, "float": float, "bool": bool, "str": str}[FIELD_TYPES[name]]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is not bool and isinstance(value, bool) or not isinstance(value, kind):
            out.append(f"{name}: expected {kind.__name__}, got {value!r}")
            continue
        allowed = CHOICES[name] if name in CHOICES else None
        if allowed is not None and value not in allowed:
            out.append(f"{name}: {value!r} is not one of {', '.join(allowed)}")
        if name in BOUNDS:
            lo, hi = BOUNDS[name]
            if value < lo or (hi is not None and value > hi):
                out.append(f"{name}: {value!r} is outside [{lo}, {hi if hi is not None else 'inf'}]")
    if not out:
        out += [f"{name}: {why}" for name in POSITIVE if (why := not_positive(name, getattr(cfg, name)))]
    if not out:
        # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
        from models.archs import get_arch

        most = get_arch(cfg.arch).max_layers
        for name in ("nLayerG", "nLayerD"):
            if most is not None and getattr(cfg, name) > most:
                out.append(f"{name}: {cfg.arch} nets have at most {most} layers (models/archs.py), "
                           f"got {getattr(cfg, name)}")
    if not out and cfg.batch_size > cfg.n_train:
        out.append(f"batch_size: {cfg.batch_size} is larger than n_train {cfg.n_train}")
    return out

def paper_rule_violation(cfg: TrialConfig) -> str | None:
    """Why the paper's grid has no such point (its family's rule, models/losses.py), or None."""
    # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
    from models.losses import get_family

    rule = get_family(cfg.family).paper_rule
    return rule(cfg) if rule else None
