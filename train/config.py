"""The training configuration: one frozen dataclass, written to ``config.json``.

Everything a run depends on is here, so ``--resume`` and a reader of the
training directory see the same settings the run used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from edgeclass.device import __version__
from edgeclass.device.errors import EdgeclassError
from edgeclass.device.bundle import ResizePolicy


class ConfigError(EdgeclassError):
    """A training option has a value that cannot work."""


class Backbone(str, Enum):
    MOBILENET_V2 = "mobilenet_v2"
    MOBILENET_V3_SMALL = "mobilenet_v3_small"
    MOBILENET_V3_LARGE = "mobilenet_v3_large"


class ClassWeights(str, Enum):
    AUTO = "auto"  # on when the largest class is IMBALANCE_THRESHOLD x the smallest
    ON = "on"
    OFF = "off"


IMBALANCE_THRESHOLD = 1.5
V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
V3_ALPHAS = (0.75, 1.0)
# Phase 2 from ImageNet weights unfreezes this many top backbone layers by default:
# in MobileNetV2, blocks 11-16 and the last 1x1 conv. On flowers it matched
# unfreezing everything on validation and trains 1.4-1.9x faster per epoch.
PRETRAINED_FINE_TUNE_LAYERS = 56


# The random crop's smallest area fraction when --augment names "crop" without a value
# (and the default): chosen on validation over three flowers splits (README, Performance).
DEFAULT_CROP = 0.25
# What a bare name in --augment turns on when its default is off.
DEFAULT_RANGES = {"rotation": 0.05, "zoom": 0.15, "brightness": 0.15, "contrast": 0.15, "crop": DEFAULT_CROP}
# cpu:N beyond this is a typo, not a test of multi-replica training.
MAX_LOGICAL_CPUS = 64
DEVICES_HELP = "expected auto, cpu, cpu:N, gpu or gpu:N (N = how many devices, e.g. cpu:2)"


def parse_devices(text: str) -> tuple[str, int | None]:
    """``--devices``: ``(kind, count)``, kind ``auto``, ``cpu`` or ``gpu``, count ``None`` when not given.

    ``auto`` = every GPU, else the CPU; ``cpu`` = the CPU (GPUs unused);
    ``cpu:N`` = the CPU split into N logical devices (N replicas without a
    GPU); ``gpu`` = every GPU; ``gpu:N`` = the first N GPUs.
    Checked here, before TensorFlow loads, so a typo fails at once.
    """
    kind, colon, raw = text.strip().lower().partition(":")
    if kind not in ("auto", "cpu", "gpu") or (kind == "auto" and colon):
        raise ConfigError(f"--devices {text!r}: {DEVICES_HELP}")
    if not colon:
        return kind, None
    try:
        count = int(raw)
    except ValueError:
        raise ConfigError(f"--devices {text!r}: {raw!r} is not a whole number; {DEVICES_HELP}") from None
    if count < 1:
        raise ConfigError(f"--devices {text!r}: the count must be 1 or more, e.g. {kind}:2")
    if kind == "cpu" and count > MAX_LOGICAL_CPUS:
        raise ConfigError(f"--devices {text!r}: at most {MAX_LOGICAL_CPUS} logical CPU devices "
                          "(cpu:2 is enough to try several replicas)")
    return kind, count


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation; ranges follow the Keras layers that apply them."""

    flip: bool = True  # horizontal mirror
    rotation: float = 0.0  # fraction of a full turn, either way (0.05 = +-18 degrees)
    zoom: float = 0.0  # up to this fraction in or out (the random crop already varies the scale)
    brightness: float = 0.15  # fraction of the 0..255 range
    contrast: float = 0.15
    # Random-resized crops of the whole photo (train/crops.py): the smallest fraction of
    # the photo's area a crop may cover; 0 = train on the device's centre crop instead.
    crop: float = DEFAULT_CROP

    @property
    def enabled(self) -> bool:
        return self.flip or any(v > 0 for v in (self.rotation, self.zoom, self.brightness, self.contrast, self.crop))

    @classmethod
    def parse(cls, text: str) -> "Augment":
        """``"none"``, ``"default"`` or e.g. ``"flip,rotation=0.1,zoom=0.2"`` (unnamed ones off)."""
        text = text.strip().lower()
        if text in ("default", ""):
            return cls()
        if text in ("none", "off"):
            return cls(False, 0.0, 0.0, 0.0, 0.0, 0.0)
        values: dict = {"flip": False, "rotation": 0.0, "zoom": 0.0, "brightness": 0.0, "contrast": 0.0, "crop": 0.0}
        defaults = asdict(cls())
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, raw = part.partition("=")
            if name not in values:
                raise ConfigError(f"--augment: unknown augmentation {name!r}, expected some of {', '.join(values)}")
            if name == "flip":
                values[name] = raw in ("", "1", "on", "true", "yes")
                continue
            try:
                value = float(raw) if raw else (defaults[name] or DEFAULT_RANGES[name])
            except ValueError:
                raise ConfigError(f"--augment: {name}={raw!r} is not a number") from None
            if not 0 <= value < 1:
                raise ConfigError(f"--augment: {name}={value} must be in [0, 1)")
            values[name] = value
        return cls(**values)

    def describe(self) -> str:
        if not self.enabled:
            return "none"
        parts = ["flip"] if self.flip else []
        parts += [f"{k}={v:g}" for k, v in asdict(self).items() if k != "flip" and v]
        return ",".join(parts)


@dataclass(frozen=True)
class TrainConfig:
    """All settings of one training run (``config.json``)."""

    data_dir: str
    backbone: Backbone = Backbone.MOBILENET_V2
    alpha: float = 1.0
    input_size: int = 224
    minimalistic: bool = True  # MobileNetV3 only: no hard-swish, no SE (Edge TPU friendly)
    weights: str = "imagenet"  # "imagenet", "none" or a path to backbone weights
    head_epochs: int = 30  # on cached backbone features: each costs well under a second
    epochs: int = 10  # fine-tuning epochs (the expensive ones)
    fine_tune_layers: int | None = None  # top backbone layers unfrozen in phase 2; -1 = all, 0 = no phase 2, None = auto
    batch_size: int = 32
    head_lr: float = 1e-3
    lr: float = 1e-4  # fine-tuning learning rate, cosine-decayed per step (3e-4 measurably hurt the pretrained features)
    warmup_epochs: int = 1  # fine-tuning: linear per-step warm-up from 0 to lr over these epochs, then cosine
    weight_decay: float = 0.0  # fine-tuning: decoupled (AdamW) weight decay; 0 = plain Adam
    dropout: float = 0.2
    label_smoothing: float = 0.1
    patience: int = 4  # epochs without val-loss improvement before stopping; 0 = never stop early
    refit: bool = False  # then train again on train+val for the epochs validation chose (train/refit.py)
    augment: Augment = field(default_factory=Augment)
    class_weights: ClassWeights = ClassWeights.AUTO
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 42
    resize: ResizePolicy = ResizePolicy.CENTER_CROP
    mixed_precision: str = "auto"  # auto = on when training runs on GPUs
    # Where training runs (parse_devices); with several devices batch_size is per replica.
    devices: str = "auto"
    workers: int = 0  # decode threads; 0 = one per core
    teacher: str | None = None  # a finished training directory to distil from (train/distill.py)
    distill_weight: float = 0.5  # share of the loss on the teacher's soft targets
    distill_temperature: float = 2.0  # softens both distributions in the distillation term

    def __post_init__(self) -> None:
        if self.backbone is Backbone.MOBILENET_V2:
            if self.weights == "imagenet" and self.alpha not in V2_ALPHAS:
                raise ConfigError(f"--alpha {self.alpha:g}: ImageNet MobileNetV2 weights exist for alpha {', '.join(f'{a:g}' for a in V2_ALPHAS)}")
        elif self.weights == "imagenet":
            # Keras publishes minimalistic V3 weights at alpha 1.0 only.
            alphas = (1.0,) if self.minimalistic else V3_ALPHAS
            if self.alpha not in alphas:
                kind = "minimalistic MobileNetV3" if self.minimalistic else "MobileNetV3"
                raise ConfigError(f"--alpha {self.alpha:g}: ImageNet {kind} weights exist for alpha {', '.join(f'{a:g}' for a in alphas)}")
        if not 32 <= self.input_size <= 512:
            raise ConfigError(f"--input-size {self.input_size}: expected 32..512 (MobileNet is trained at 96..224)")
        if len(self.split) != 3 or any(r <= 0 for r in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"--split {','.join(f'{r:g}' for r in self.split)}: expected three positive fractions summing to 1, e.g. 0.8,0.1,0.1")
        if self.epochs < 0 or self.head_epochs < 1:
            raise ConfigError("--epochs must be >= 0 and --head-epochs >= 1")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise ConfigError("--warmup-epochs and --weight-decay must be >= 0")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be >= 1")
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            raise ConfigError("--dropout and --label-smoothing must be in [0, 1)")
        if not 0 <= self.distill_weight <= 1:
            raise ConfigError(f"--distill-weight {self.distill_weight:g}: must be in [0, 1] (the teacher's share of the loss)")
        if not self.distill_temperature > 0:
            raise ConfigError(f"--distill-temperature {self.distill_temperature:g}: must be > 0 (1 = the probabilities as they are)")
        if self.mixed_precision not in ("auto", "on", "off"):
            raise ConfigError(f"--mixed-precision {self.mixed_precision!r}: expected auto, on or off")
        parse_devices(self.devices)

    @property
    def fine_tune_top(self) -> int:
        """The top backbone layers phase 2 unfreezes (-1 = all, 0 = none).

        Auto (``None``): :data:`PRETRAINED_FINE_TUNE_LAYERS` on pretrained weights;
        every layer from random weights, where no layer has anything worth keeping.
        """
        if self.fine_tune_layers is not None:
            return self.fine_tune_layers
        return -1 if self.weights == "none" else PRETRAINED_FINE_TUNE_LAYERS

    def to_json(self, **extra) -> dict:
        """``config.json``: every field plus what the converter and device need by name."""
        data = asdict(self)
        data.update(
            backbone=self.backbone.value,
            class_weights=self.class_weights.value,
            resize=self.resize.value,
            augment=asdict(self.augment),
            split=list(self.split),
            normalization="model",  # the model takes 0..255 RGB and normalises inside itself
            input_dtype="float32",
            color="RGB",
            edgeclass_version=__version__,
        )
        data.update(extra)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TrainConfig":
        """Rebuild the configuration a run saved (for ``--resume``)."""
        names = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["backbone"] = Backbone(kwargs["backbone"])
        kwargs["class_weights"] = ClassWeights(kwargs.get("class_weights", "auto"))
        kwargs["resize"] = ResizePolicy(kwargs.get("resize", "center_crop"))
        # Runs saved before random crops existed trained on the centre crop.
        kwargs["augment"] = Augment(**{"crop": 0.0, **kwargs.get("augment", {})})
        kwargs["split"] = tuple(kwargs.get("split", (0.8, 0.1, 0.1)))
        if isinstance(kwargs.get("teacher"), dict):  # config.json records the teacher's summary, the run its path
            kwargs["teacher"] = kwargs["teacher"]["path"]
        return cls(**kwargs)

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)
