"""Training configuration and the named recipes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from .errors import CuvaeError
from .model import Arch

BINARIZE = ("none", "static", "dynamic")
DTYPES = ("float32", "float64")

# A recipe fills every option the user did not give on the command line.
RECIPES = {
    "default": dict(hidden=(256, 128), latent=8, likelihood="bernoulli", init="pytorch", batch_size=100, lr=1e-3),
    # The book chapter's network and training, with its slips fixed (see README):
    # 784-256-128-8, ReLU, sigmoid output, SSE + KL, Glorot-uniform, Adam, batch 100, lr 1e-3 (not 0.01).
    "chapter": dict(hidden=(256, 128), latent=8, likelihood="gaussian", init="glorot", batch_size=100, lr=1e-3),
    # The PyTorch examples' VAE: 784-400-20, BCE, batch 128, Adam 1e-3.
    "pytorch-example": dict(hidden=(400,), latent=20, likelihood="bernoulli", init="pytorch", batch_size=128, lr=1e-3),
}


@dataclass
class TrainConfig:
    recipe: str = "default"
    dataset: str = "mnist"
    model: str = "vae"
    hidden: tuple[int, ...] = (256, 128)
    latent: int = 8
    likelihood: str = "bernoulli"
    init: str = "pytorch"
    beta: float = 1.0
    kl_warmup: float = 0.0
    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    clip_norm: float | None = None
    seed: int = 0
    binarize: str = "none"
    train_size: int | None = None
    test_size: int | None = None
    dtype: str = "float32"

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)

    @classmethod
    def from_recipe(cls, recipe: str = "default", **overrides) -> "TrainConfig":
        if recipe not in RECIPES:
            raise CuvaeError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
        values = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(recipe=recipe, **values)

    @property
    def arch(self) -> Arch:
        return Arch(in_dim=784, hidden=self.hidden, latent=self.latent, likelihood=self.likelihood, kind=self.model)

    def build_model(self, ops):
        """The model this config describes, on a backend's ops."""
        from .model import VAE

        return VAE(self.arch, ops, self.dtype)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    # Options that define the model's parameters; a checkpoint must agree on them.
    ARCH_KEYS = ("dataset", "model", "hidden", "latent", "likelihood")
