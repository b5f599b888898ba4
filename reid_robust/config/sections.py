"""The config as frozen dataclasses, one per section; each checks its own types, ranges and choices when it
is built, from YAML or in Python (``TrainConfig(lr=-1)`` raises ConfigError naming ``train.lr``).

Consumers take only their section: the optimiser and schedule read :class:`TrainConfig`, label noise
:class:`NoiseConfig`, the augmentations :class:`TransformConfig`, evaluation :class:`EvalConfig`.
The meaning of every field is the ``help`` text below; docs/config.md is generated from it
(``python -m reid_robust.config.docs``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from reid_robust.config.fields import ConfigError, Rule, Section, above, at_least, check_value, option, within
from reid_robust.registry import did_you_mean

# the metrics each evaluation protocol reports (reid_robust.evaluation); any of them can select best.pth
PROTOCOL_METRICS: dict[str, tuple[str, ...]] = {
    "market": ("mAP", "rank1", "rank5", "rank10", "mINP"),
    "cub": ("recall@1", "recall@2", "recall@4", "recall@8", "map_at_r", "precision_at_1", "nmi"),
}
BestMetric = Literal["mAP", "rank1", "rank5", "rank10", "mINP", "recall@1", "recall@2", "recall@4", "recall@8",
                     "map_at_r", "precision_at_1", "nmi"]
PROBABILITY = within(0.0, 1.0)


def closest(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or the list of valid names, to end a message about an unknown ``name``."""
    valid = sorted(valid)
    return did_you_mean(name, valid) or f"; valid names: {', '.join(valid)}"


@dataclass(frozen=True)
class NoiseConfig(Section):
    PREFIX = "data.noise."
    rate: float = option(0.0, "share of wrong training labels per identity (open_set: share of identities hidden)",
                         PROBABILITY)
    mode: Literal["symmetric", "pair", "pattern", "open_set"] = option(
        "symmetric", "`symmetric`, `pair`, `pattern`, `open_set` (see `docs/data.md`)")
    seed: int = option(0, "seed of the noise (independent of `seed`)", at_least(0))
    list: str | None = option(None, "a published noisy label list (CSV `path,noisy_label`) used instead of injection")
    confusable: str | None = option(None, "for `pattern`: a `.npy` array (one identity per identity) or a checkpoint "
                                          "trained on clean labels")


@dataclass(frozen=True)
class SamplerConfig(Section):
    PREFIX = "data.sampler."
    num_identities: int = option(16, "P identities per batch", at_least(2, " (pairs need two identities)"))
    num_instances: int = option(4, "K images per identity", at_least(1))
    batches_per_epoch: int = option(0, "0 = training images // (P x K)", at_least(0, " (0: one pass over the data)"))


def _interval(upper: float) -> Rule:
    return Rule(f"[lo, hi] with 0 < lo <= hi <= {upper:g}", lambda pair: 0 < pair[0] <= pair[1] <= upper)


@dataclass(frozen=True)
class TransformConfig(Section):
    """Augmentations of the BoT recipe (Luo et al., CVPRW 2019); built by ``reid_robust.data.build_transforms``."""

    PREFIX = "data.transforms."
    size: tuple[int, int] = option((256, 128), "image size `[height, width]`", at_least(1))
    pad: int = option(10, "pixels of zero padding before the random crop back to `size`; 0 disables", at_least(0))
    flip: float = option(0.5, "horizontal-flip probability", PROBABILITY)
    color_jitter: float = option(0.0, "brightness/contrast/saturation strength (hue = strength / 4); 0 disables",
                                 at_least(0))
    color_jitter_p: float = option(0.5, "probability of applying the colour jitter", PROBABILITY)
    random_erasing: float = option(0.5, "random-erasing probability (Zhong et al., AAAI 2020); 0 disables",
                                   PROBABILITY)
    erasing_scale: tuple[float, float] = option((0.02, 0.4), "erased area as a fraction of the image `[lo, hi]`")
    erasing_ratio: tuple[float, float] = option((0.3, 3.33), "aspect-ratio range `[lo, hi]` of the erased box")
    mean: tuple[float, float, float] = option((0.485, 0.456, 0.406), "per-channel (RGB) normalisation mean")
    std: tuple[float, float, float] = option((0.229, 0.224, 0.225), "per-channel (RGB) normalisation std",
                                             above(0))

    def check(self) -> None:
        for name, rule in (("erasing_scale", _interval(1.0)), ("erasing_ratio", _interval(float("inf")))):
            value = getattr(self, name)
            if not rule.test(value):
                raise ConfigError(f"'{self.PREFIX}{name}' must be {rule.text}, got {list(value)!r}")


@dataclass(frozen=True)
class DataConfig(Section):
    PREFIX = "data."
    dataset: str = option("synthetic_market", "a registered dataset (`reid_robust.data.dataset_names()`; "
                                              "see `datasets/README.md`)")
    root: str = option("datasets/synthetic_market", "dataset root (see `datasets/README.md` for the expected trees)")
    num_workers: int = option(2, "DataLoader worker processes", at_least(0))
    test_batch_size: int = option(128, "batch size of feature extraction", at_least(1))
    crop_bbox: bool = option(False, "crop CUB-200-2011 / Cars196 images to their bounding boxes")
    cache_images: bool = option(False, "decode the training images once and keep them in memory (H x W x 3 bytes "
                                       "each: 318 MB for Market-1501 at 128x64, per DDP rank); epochs then only "
                                       "augment")
    options: dict = option({}, "extra loader options, e.g. `{num_identities: 40}` for synthetic data, "
                               "`{version: v2}` for MSMT17")
    noise: NoiseConfig = option(NoiseConfig, "label noise injected into the training split")
    sampler: SamplerConfig = option(SamplerConfig, "PK batch sampler")
    transforms: TransformConfig = option(TransformConfig, "augmentations")

    def check(self) -> None:
        from reid_robust.data.registry import dataset_names, dataset_options

        names = dataset_names()
        if self.dataset not in names:
            raise ConfigError(f"data.dataset: unknown dataset '{self.dataset}'{closest(self.dataset, names)}")
        accepted = dataset_options(self.dataset)
        for name in self.options:
            if name not in accepted:
                raise ConfigError(f"data.options.{name}: dataset '{self.dataset}' has no option '{name}'; "
                                  f"it accepts: {', '.join(accepted) or 'none'}")


@dataclass(frozen=True)
class ModelConfig(Section):
    PREFIX = "model."
    backbone: str = option("resnet50", "a registered backbone (`reid_robust.models.BACKBONES`) or `timm:<model>`")
    pretrained: str | None = option(None, "`imagenet` (the backbone's official weights, docs/models.md) or a "
                                    "local state-dict file")
    embedding_dim: int = option(0, "0 keeps the backbone's dimension, otherwise a linear reduction",
                                at_least(0, " (0: the backbone's width)"))
    last_stride: int = option(1, "1 removes the last down-sampling (BoT)", Rule("1 or 2", lambda v: v in (1, 2)))
    pooling: Literal["avg", "gem"] = option("avg", "`avg` or `gem`")
    neck: Literal["bnneck", "none"] = option("bnneck", "`bnneck` or `none`")
    freeze_stages: int = option(0, "freeze the stem and early residual stages", at_least(0))

    def check(self) -> None:
        from reid_robust.models import backbone_problem

        problem = backbone_problem(self.backbone)
        if problem is not None:
            raise ConfigError(f"model.backbone: {problem}")


def check_loss_parameters(where: str, name: str, given: Iterable[str]) -> None:
    """``name`` is a registered loss and accepts every parameter in ``given`` (the loss registry's own check)."""
    from reid_robust.losses import check_loss_parameters as registry_check

    try:
        registry_check(name, set(given), supplied_later=("num_classes", "embedding_dim"))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None


def check_loss_values(name: str, params: dict) -> None:
    """The loss accepts these values: it is built once on a toy size (2 classes, 4 dimensions)."""
    from reid_robust.losses import LOSSES, build_loss

    sizes = {"num_classes": 2, "embedding_dim": 4} if getattr(LOSSES[name], "needs_num_classes", False) else {}
    try:
        build_loss(name, **{**sizes, **params})
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


@dataclass(frozen=True)
class LossTermConfig(Section):
    """One weighted loss term; in YAML ``{name, weight, input, **params}`` (params go to ``build_loss``)."""

    PREFIX = "loss.terms[]."
    name: str = option("triplet", "a registered loss (`reid_robust.losses.LOSSES`)")
    weight: float = option(1.0, "factor of this term in the total loss")
    input: Literal["feat", "bn_feat"] = option("feat", "`feat` (before the BNNeck) or `bn_feat`")
    params: dict = option({}, "the loss's parameters (`docs/losses.md`)")

    def check(self) -> None:
        check_loss_parameters("", self.name, self.params)
        check_loss_values(self.name, self.params)

    @classmethod
    def from_dict(cls, mapping: Any, key: str | None = None) -> LossTermConfig:
        where = key or "loss.terms[]"
        if not isinstance(mapping, dict) or "name" not in mapping:
            raise ConfigError(f"{where} must be a mapping with at least a 'name', got {mapping!r}")
        params = {k: v for k, v in mapping.items() if k not in ("name", "weight", "input", "params")}
        params.update(mapping.get("params") or {})
        try:
            return cls(name=mapping["name"], weight=mapping.get("weight", 1.0), input=mapping.get("input", "feat"),
                       params=params)
        except ConfigError as exc:
            raise ConfigError(f"{where} ({mapping['name']}): {str(exc).replace(cls.PREFIX, '')}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "input": self.input, **self.params}


def default_terms() -> tuple[LossTermConfig, ...]:
    """Batch-hard triplet on the pooled feature + label-smoothed cross entropy on the BNNeck feature (BoT)."""
    return (LossTermConfig("triplet", 1.0, "feat", {"margin": 0.3}),
            LossTermConfig("cross_entropy", 1.0, "bn_feat", {"epsilon": 0.1}))


@dataclass(frozen=True)
class LossConfig(Section):
    PREFIX = "loss."
    terms: tuple[LossTermConfig, ...] = option(default_terms, "list of `{name, weight, input, ...parameters}`; "
                                               "`input` is `feat` (before the BNNeck) or `bn_feat`; parameters go to "
                                               "`build_loss` (`docs/losses.md`)")

    def check(self) -> None:
        if not self.terms:
            raise ConfigError("'loss.terms' must be a non-empty list of {name, weight, input, ...}")


ROUND_ACTIONS = ("drop", "relabel", "weight")  # cleaning actions decided in rounds; "oracle" decides once, from the truth


@dataclass(frozen=True)
class CleaningConfig(Section):
    """Self-cleaning rounds (``docs/noise_benchmark.md``, "Self-cleaning"): from ``start_epoch``, every ``every``
    epochs, the training images are scored by the label audit's scorer and the most suspect are acted on."""

    PREFIX = "train.cleaning."
    action: Literal["off", "drop", "relabel", "weight", "oracle"] = option(
        "off", "`off`; `drop` (the sampler leaves the flagged images out), `relabel` (to the identity the run's "
               "classifier assigns, above `relabel_confidence`) or `weight` (flagged images weigh their mixture "
               "posterior of a clean label in every loss term); `oracle` is a benchmark baseline, not a method: it "
               "trains without the images the injected noise made wrong (the noise manifest's `is_noisy`)")
    start_epoch: int = option(2, "first epoch after which a round runs", at_least(1))
    every: int = option(1, "epochs between rounds", at_least(1))
    rate: float | None = option(None, "share of images flagged each round; null = estimated from a two-component "
                                      "Gaussian mixture over the `component` score", within(0, 1, open_high=True))
    component: Literal["reliability", "knn", "margin"] = option(
        "margin", "raw score whose distribution estimates the rate: `margin` (embedding, any loss), `knn` "
                  "(neighbour labels) or `reliability` (the loss's trust in the label; needs a classifier term)")
    rate_scale: float = option(1.0, "the estimated rate is multiplied by this before flagging (at most `max_rate`; "
                                    "an explicit `rate` is used as given): above 1 flags more, trading precision "
                                    "for recall", above(0))
    restart_rate_scale: float | None = option(
        None, "`rate_scale` of the rounds after the first restart (their model trained on the cleaned set, not on "
              "the wrong labels); null = `rate_scale`", above(0, " (or null: rate_scale)"))
    max_rate: float = option(0.6, "upper bound of the estimated rate", within(0, 1, open_low=True, open_high=True))
    min_separation: float = option(2.0, "the mixture counts as two populations only when Ashman's D between its "
                                        "components is at least this (otherwise the estimate is 0)", at_least(0))
    min_images: int = option(2, "`drop`: an identity left with fewer images is removed (counted); between this "
                                "and `data.sampler.num_instances` it is sampled with replacement (counted)",
                             at_least(1))
    relabel_confidence: float = option(0.9, "`relabel`: the classifier's softmax probability a flagged image's "
                                            "new label needs (otherwise its label stays)",
                                       within(0, 1, open_low=True))
    k: int = option(10, "neighbours of the `knn` score", at_least(1))
    passes: int = option(4, "PK passes over the data for batch-dependent reliability terms (PRISM)", at_least(1))
    restart_epochs: tuple[int, ...] = option(
        (), "epochs after which the model, loss terms, optimiser and schedule start again from the seed's "
            "initialisation and train on the cleaned set, whose decision then stays fixed until the next listed "
            "epoch (one round decides again there, with the model trained on the cleaner set) or to the end; "
            "rounds on the `start_epoch`/`every` grid run before the first restart only; after the last restart "
            "`train.epochs` epochs follow (the run has `last + train.epochs` epochs); [] = no restart",
        at_least(1))


@dataclass(frozen=True)
class TrainConfig(Section):
    PREFIX = "train."
    epochs: int = option(120, "epochs", at_least(0))
    optimizer: Literal["sgd", "adam", "adamw"] = option("adam", "`sgd`, `adam`, `adamw`")
    lr: float = option(3.5e-4, "base learning rate of the model", above(0))
    loss_lr: float | None = option(None, "learning rate of loss parameters (class weights); null = `train.lr`",
                                   above(0, " (or null: train.lr)"))
    weight_decay: float = option(5e-4, "weight decay", at_least(0))
    momentum: float = option(0.9, "SGD momentum (Nesterov)", within(0, 1, open_high=True))
    scheduler: Literal["cosine", "multistep", "constant"] = option(
        "multistep", "`cosine`, `multistep`, `constant` (after warm-up; stepped every iteration)")
    milestones: tuple[int, ...] = option((40, 70), "multistep decay epochs (increasing, >= 1)", at_least(1))
    gamma: float = option(0.1, "multistep decay factor", within(0, 1, open_low=True))
    warmup_epochs: int = option(10, "epochs of linear warm-up from `warmup_factor` x lr", at_least(0))
    warmup_factor: float = option(0.01, "first warm-up factor", within(0, 1, open_low=True))
    grad_clip: float = option(0.0, "max gradient norm; 0 disables", at_least(0, " (0: off)"))
    amp: bool = option(False, "mixed precision: bf16 autocast on CPU, fp16 + GradScaler on GPU; losses run in float32")
    resume: str | None = option(None, "checkpoint to resume from (model, optimiser, scheduler, scaler, loss states, "
                                      "epoch, iteration); changed keys: see \"Resuming with changed keys\" below")
    overwrite: bool = option(False, "train into an `output_dir` that holds another run: its files are moved to "
                                    "`<output_dir>/previous-<UTC time>/` first (nothing is deleted)")
    gather_embeddings: bool = option(False, "under DDP, every loss term sees the embeddings of all ranks; the loss "
                                            "is scaled so that the update equals one process on the global batch")
    checkpoint_every: int = option(1, "write `last.pth` every N epochs (always at the end)", at_least(1))
    best_metric: BestMetric = option("mAP", "metric that selects `best.pth` (`map_at_r` is used for retrieval data)")
    tensorboard: bool = option(False, "also write TensorBoard scalars (needs the tensorboard package: "
                                      "`pip install -e \".[tensorboard]\"`; checked when the config loads)")
    progress: bool = option(True, "progress of each epoch's steps: a bar on a terminal or in a notebook, otherwise a "
                                  "log line about every 30 s (step, img/s, losses); false turns both off")
    num_threads: int = option(0, "torch CPU threads; 0 = torch's default", at_least(0, " (0: torch's default)"))
    cleaning: CleaningConfig = option(CleaningConfig, "self-cleaning rounds (off by default)")

    def check(self) -> None:
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ConfigError(f"train.milestones: must be increasing epoch numbers >= 1, got {list(self.milestones)!r}")
        if self.cleaning.restart_epochs and self.epochs < 1:
            raise ConfigError(f"train.epochs={self.epochs}: with train.cleaning.restart_epochs the epochs after the "
                              "last restart must be at least 1 (otherwise the run would end on a re-initialised "
                              "model)")

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole run: ``epochs``, after the last of ``cleaning.restart_epochs`` when there is one."""
        return self.epochs + (self.cleaning.restart_epochs[-1] if self.cleaning.restart_epochs else 0)


@dataclass(frozen=True)
class EvalConfig(Section):
    PREFIX = "eval."
    every: int = option(10, "evaluate every N epochs (and always after the last); 0 = only at the end",
                        at_least(0, " (0: only after the last epoch)"))
    untrained: bool = option(False, "also evaluate the network at initialisation (stored as `untrained` in "
                                    "metrics.json)")
    flip: bool = option(False, "average each embedding with its mirror image's")
    metric: Literal["cosine", "euclidean"] = option("cosine", "`cosine` or `euclidean`")
    rerank: bool = option(False, "k-reciprocal re-ranking (Market protocol)")
    camera_filter: bool = option(True, "Market protocol: same-identity gallery images from the query's camera are "
                                       "junk; false for data without cameras (a `folder` dataset without "
                                       "`data.options.camera_pattern`): every same-identity gallery image counts")


@dataclass(frozen=True)
class SweepConfig(Section):
    PREFIX = "sweep."
    presets: dict = option({}, "parameters `tools/noise_sweep.py` gives each swept loss, `{osm_caa: {margin: 1.2}, "
                               "ice: {scale: 16}}`; loss names and parameter names are checked when the config "
                               "loads; a training run ignores them")

    def check(self) -> None:
        for name, params in self.presets.items():
            where = f"sweep.presets.{name}"
            if not isinstance(params, dict):
                raise ConfigError(f"{where}: must be a mapping of the loss's parameters, got {params!r}")
            check_loss_parameters(where, name, params)


@dataclass(frozen=True)
class Config(Section):
    """The whole run: a seed, an output folder, a device and one section per consumer."""

    seed: int = option(0, "seeds model initialisation, PK sampling and augmentation (per epoch, so a resumed run "
                          "repeats them)", at_least(0))
    output_dir: str = option("runs/default", "where `config.yaml`, `checkpoints/`, `metrics.json`, `train.log`, "
                                             "`log.csv` go; one run per folder (see \"Run folders\" below)")
    device: str = option("auto", "`auto` (CUDA when available), `cpu`, `cuda`, `cuda:N`")
    data: DataConfig = option(DataConfig, "data")
    model: ModelConfig = option(ModelConfig, "model")
    loss: LossConfig = option(LossConfig, "loss")
    train: TrainConfig = option(TrainConfig, "train")
    eval: EvalConfig = option(EvalConfig, "eval")
    sweep: SweepConfig = option(SweepConfig, "sweep")

    def check(self) -> None:
        if self.device != "auto":
            import torch

            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise ConfigError(f"device: '{self.device}' is not a device; use auto, cpu, cuda or cuda:N") from None
        check_positives(self.data.sampler, self.loss.terms)
        check_cleaning(self.train.cleaning, self.loss.terms)


def check_positives(sampler: SamplerConfig, terms: Iterable[LossTermConfig]) -> None:
    """Pair, triplet and ranking losses need a positive pair in the batch: ``data.sampler.num_instances`` >= 2
    (the loss class's ``needs_positives``; classification losses such as cross_entropy do not)."""
    from reid_robust.losses import LOSSES

    if sampler.num_instances >= 2:
        return
    for i, term in enumerate(terms):
        if getattr(LOSSES.get(term.name), "needs_positives", True):
            raise ConfigError(f"data.sampler.num_instances={sampler.num_instances} gives no positive pairs, which "
                              f"loss.terms[{i}] ({term.name}) needs: use data.sampler.num_instances >= 2 (only "
                              "classification losses such as cross_entropy train with one image per identity)")


def check_cleaning(cleaning: CleaningConfig, terms: Iterable[LossTermConfig]) -> None:
    """``relabel`` needs a classifier term (its argmax is the new label); the ``reliability`` component needs a
    classifier or a reliability-weighting term (``reid_robust.cleaning.scoring.reliability_weights``); a restart
    needs a round before it."""
    from reid_robust.losses import LOSSES
    from reid_robust.losses.base import ClassifierLoss

    restarts = list(cleaning.restart_epochs)
    if restarts and cleaning.action not in ROUND_ACTIONS:
        raise ConfigError(f"train.cleaning.restart_epochs={restarts} restart on the decision of a cleaning round, "
                          f"and train.cleaning.action={cleaning.action} runs none; use drop, relabel or weight, "
                          "or restart_epochs=[]")
    if restarts != sorted(set(restarts)):
        raise ConfigError(f"train.cleaning.restart_epochs: must be increasing epoch numbers, got {restarts}")
    if cleaning.restart_rate_scale is not None and len(restarts) < 2:
        raise ConfigError(f"train.cleaning.restart_rate_scale={cleaning.restart_rate_scale} applies to the round at a "
                          f"second restart, and train.cleaning.restart_epochs={restarts} has none; list two "
                          "restart epochs, or restart_rate_scale=null")
    if restarts and restarts[0] < cleaning.start_epoch:
        raise ConfigError(f"train.cleaning.restart_epochs={restarts} starts before the first round "
                          f"(train.cleaning.start_epoch={cleaning.start_epoch}); restart at or after it")
    if cleaning.action == "off":
        return
    names = [t.name for t in terms]
    classifier = any(isinstance(LOSSES.get(n), type) and issubclass(LOSSES[n], ClassifierLoss) for n in names)
    if cleaning.action == "relabel" and not classifier:
        raise ConfigError(f"train.cleaning.action=relabel needs a classifier term in loss.terms (its argmax is the "
                          f"new label), got {names}; add e.g. cross_entropy, or use drop or weight")
    reliable = any(getattr(LOSSES.get(n), "weights_meaning", None) == "reliability" for n in names)
    if cleaning.component == "reliability" and not (classifier or reliable):
        raise ConfigError(f"train.cleaning.component=reliability needs a classifier or reliability-weighting term "
                          f"in loss.terms, got {names}; use margin or knn")


SECTION_TYPES = (NoiseConfig, SamplerConfig, TransformConfig, DataConfig, ModelConfig, LossTermConfig, LossConfig,
                 CleaningConfig, TrainConfig, EvalConfig, SweepConfig, Config)
__all__ = ["check_value"]  # re-exported for the loader
