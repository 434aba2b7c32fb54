"""Training configuration and the named recipes."""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, fields

from cuvae.errors import CuvaeError
from cuvae.nn.model import Arch

BINARIZE = ("none", "static", "dynamic")
ARCH_TYPES = ("mlp", "conv")
DTYPES = ("float32", "float64")

# A recipe fills every option the user did not give on the command line.
RECIPES = {
    "default": dict(hidden=(256, 128), latent=8, likelihood="bernoulli", init="pytorch", batch_size=100, lr=1e-3),
    # The book chapter's network and training, with its slips fixed (see README):
    # 784-256-128-8, ReLU, sigmoid output, SSE + KL, Glorot-uniform, Adam, batch 100, lr 1e-3 (not 0.01).
    "chapter": dict(hidden=(256, 128), latent=8, likelihood="gaussian", init="glorot", batch_size=100, lr=1e-3),
    # The PyTorch examples' VAE: 784-400-20, BCE, batch 128, Adam 1e-3.
    "pytorch-example": dict(hidden=(400,), latent=20, likelihood="bernoulli", init="pytorch", batch_size=128, lr=1e-3),
    # Burda et al. (2016), one stochastic layer: 784-200-200-50, tanh, Bernoulli, dynamic binarisation, batch 20,
    # Adam (0.9, 0.999, eps 1e-4), 3,280 passes at 1e-3 * 10^(-i/7) for 3^i passes (i = 0..7); --epochs shortens it.
    "burda-vae": dict(hidden=(200, 200), latent=50, likelihood="bernoulli", init="glorot", activation="tanh",
                      binarize="dynamic", batch_size=20, lr=1e-3, adam_eps=1e-4, schedule="burda", epochs=3280),
    "burda-iwae": dict(hidden=(200, 200), latent=50, likelihood="bernoulli", init="glorot", activation="tanh",
                       binarize="dynamic", batch_size=20, lr=1e-3, adam_eps=1e-4, schedule="burda", epochs=3280,
                       objective="iwae", samples=5),
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
    arch_type: str = "mlp"  # "mlp" (cuvae.nn.model.VAE) or "conv" (cuvae.nn.conv_model.ConvVAE)
    channels: tuple[int, ...] = (32, 64, 128)  # conv only: channels of the stride-2 convolutions
    image_shape: tuple[int, ...] | None = None  # (C, H, W); None: looked up from the dataset
    activation: str = "relu"  # MLP hidden layers: relu or tanh
    objective: str = "elbo"  # elbo (K-sample average) or iwae (Burda et al.'s bound); see cuvae.nn.objectives
    samples: int = 1  # K: latent samples per example in the training objective
    adam_eps: float = 1e-8
    schedule: str = "constant"  # learning rate: constant, burda or cosine (cuvae.engine.schedules)
    test_binarize: str = "auto"  # auto, none or fixed (cuvae.data.protocol)

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        self.channels = tuple(int(c) for c in self.channels)
        try:
            seed = None if isinstance(self.seed, bool) else operator.index(self.seed)
        except TypeError:
            seed = None
        if seed is None or seed < 0:  # NumPy's generators take no negative seeds
            raise CuvaeError(f"--seed must be a whole number >= 0, got {self.seed!r}")
        self.seed = int(seed)
        if self.arch_type not in ARCH_TYPES:
            raise CuvaeError(f"unknown --arch {self.arch_type!r}; choose one of: {', '.join(ARCH_TYPES)}")
        if self.image_shape is None:
            from cuvae.data.images import dataset_image_shape

            self.image_shape = dataset_image_shape(self.dataset)
        self.image_shape = tuple(int(v) for v in self.image_shape)
        from cuvae.engine.objective import check

        check(self)

    @classmethod
    def from_recipe(cls, recipe: str = "default", **overrides) -> "TrainConfig":
        if recipe not in RECIPES:
            raise CuvaeError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
        values = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}}
        config = cls(recipe=recipe, **values)
        # colour images with the conv model: a discretised logistic (bits/dim) unless asked otherwise
        if (overrides.get("likelihood") is None and config.arch_type == "conv" and config.image_shape[0] == 3
                and config.likelihood == "bernoulli"):
            config.likelihood = "logistic"
        return config

    @property
    def arch(self):
        """The MLP's :class:`Arch` or the conv model's :class:`ConvArch`, sized for the dataset's images."""
        from math import prod

        if self.arch_type == "conv":
            from cuvae.nn.conv_model import CONV_LIKELIHOODS, ConvArch

            if self.likelihood not in CONV_LIKELIHOODS:
                raise CuvaeError(f"--likelihood {self.likelihood} is not available for --arch conv; "
                                 f"choose one of: {', '.join(CONV_LIKELIHOODS)}")
            try:
                return ConvArch(image_shape=self.image_shape, channels=self.channels, latent=self.latent,
                                likelihood=self.likelihood, kind=self.model)
            except ValueError as err:
                raise CuvaeError(f"--arch conv: {err}") from None
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise CuvaeError(f"--likelihood {self.likelihood} needs --arch conv; the MLP has bernoulli and gaussian")
        return Arch(in_dim=prod(self.image_shape), hidden=self.hidden, latent=self.latent,
                    likelihood=self.likelihood, kind=self.model, activation=self.activation)

    def build_model(self, ops):
        """The model this config describes, on a backend's ops."""
        if self.arch_type == "conv":
            from cuvae.nn.conv_model import ConvVAE

            return ConvVAE(self.arch, ops, self.dtype)
        from cuvae.nn.model import VAE

        return VAE(self.arch, ops, self.dtype)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["channels"] = list(self.channels)
        d["image_shape"] = list(self.image_shape)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        if "test_binarize" not in d:  # a run from before the protocol: evaluated as it always was
            d = {**d, "test_binarize": "fixed" if d.get("binarize") == "static" else "none"}
        return cls(**{k: v for k, v in d.items() if k in known})

    # Options that define the model's parameters; a checkpoint must agree on them.
    ARCH_KEYS = ("dataset", "model", "hidden", "latent", "likelihood", "arch_type", "channels", "activation")
