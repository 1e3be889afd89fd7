"""SFTClassifier: a pretrained backbone + fused supervised head, trained with CE + lambda R(theta)."""

import inspect
import logging
import math
import operator
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import replace
from itertools import islice
from typing import Annotated, Any

import lightning as L
import torch
from annotated_types import Ge, Interval
from hydra.utils import get_object, instantiate
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import Container, OmegaConf
from torch import nn

from sft.contracts import (
    LOGGED_METRICS,
    MODEL_TARGET,
    REGULARIZER_STATE,
    TRAINED_PRECISION,
    VAL_ACC_BEST,
    ClassificationData,
    check_class_indices,
    datamodule_gaps,
    not_a_datamodule,
)
from sft.errors import SFTError, first_line, out_of_memory
from sft.models.activations import out_of_place_activations
from sft.models.adapters import (
    BASE_WEIGHTS,
    LoraSettings,
    adapter_layers,
    adapters_in_contiguous_layout,
    add_lora,
    check_base_weights,
    exactly,
    frozen_parameters,
    is_adapter_parameter,
    weights_hash,
)
from sft.models.backbones import (
    backbone_speed_hints,
    config_as_saved,
    create_backbone,
    inner_model,
    resolve_input_spec,
)
from sft.models.backbones.size_probe import fails_for_size
from sft.models.depthwise_conv import route_depthwise_convs
from sft.models.fast_dropout import use_fast_dropout
from sft.models.fp32_metrics import Float32Max, Float32Mean
from sft.models.fused_amp import clip_fused, clips_fused, unscale_fused
from sft.models.kept_embedding_grad import KeptEmbeddingGrads
from sft.models.linear_probe import (
    check_probe_settings,
    extract_features,
    fit_logistic_regression,
)
from sft.models.metrics import (
    DEFAULT_METRICS,
    check_metric_names,
    create_metrics,
    unregistered,
)
from sft.models.norm_folding import (
    fold_frozen_norms,
    folded_activations,
    freeze_norm_statistics,
)
from sft.models.optim import create_scheduler, layerwise_param_groups, param_groups
from sft.models.pointwise_conv import route_pointwise_convs
from sft.models.regularizers import create_regularizer
from sft.utils.config_types import Fraction, NonNegative
from sft.utils.distributed import destroy_process_group_at_exit
from sft.utils.logs import first_few, rank_zero_warning

log = logging.getLogger(__name__)
# checkpoint key of the decoupled regulariser's pulls held back (model.reg_every)
REG_HELD = "reg_held"
# checkpoint key of the best validation accuracy so far: torchmetrics keeps metric states out
# of the state_dict, and a resumed run must not forget the validations before its checkpoint


# torch's refusal of a training-mode batch norm over one value per channel (a 1-image batch
# whose feature map is 1x1)
ONE_VALUE_PER_CHANNEL = "Expected more than 1 value per channel when training"


def _plain(cfg: Any) -> Any:
    """Hydra hands `_recursive_: false` sub-configs over as DictConfig (a list as ListConfig);
    hparams must be plain containers so that checkpoints load with
    `torch.load(weights_only=True)`."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, Container) else cfg


def check_optimizer_settings(optimizer: Mapping | None) -> None:
    """SFTError for a rate or decay given to the optimizer itself: each parameter group gets
    its own (lr_head, lr_backbone, lr_adapter, weight_decay), which override it without a word
    (was: SGD's usual lr=0.1 accepted, and the run trained at lr_head). For training only: a
    checkpoint saved with one still loads."""
    given = next((k for k in ("lr", "weight_decay") if k in (optimizer or {})), None)
    if given is not None:
        raise SFTError(
            f"model.optimizer.{given}: sft sets it per parameter group; give the learning rates "
            "as model.lr_head / model.lr_backbone (model.lr_adapter) and the decay as "
            f"model.weight_decay, and leave model.optimizer.{given} out"
        )


def own_weights_train(freeze_backbone: bool, adapter: Mapping | None) -> bool:
    """Whether the backbone's own weights train (at lr_backbone): under adapters only where the
    adapter settings unfreeze them (norms, biases, modules to save)."""
    return not freeze_backbone and (
        adapter is None
        or bool(adapter.get("train_norms"))
        or adapter.get("bias", "none") != "none"
        or bool(adapter.get("modules_to_save"))
    )


def check_decoupled_pull(model: Mapping[str, Any], adapter: Mapping | None) -> None:
    """SFTError for a decoupled pull past its target: each step keeps 1 - 2 lr lambda of
    theta - target (theta_0 for L2-SP, 0 for L2), so at lr lambda >= 1/2 it overshoots (was: a
    run that went on, each pull pushing the weights further away, recorded as completed).
    `model`: the model config (unset keys: SFTClassifier's defaults). For training only: a
    checkpoint saved with such settings still loads."""
    defaults = inspect.signature(SFTClassifier.__init__).parameters
    hp = {k: p.default for k, p in defaults.items()} | dict(model)
    lam = hp["reg_lambda"]
    if hp["regularizer"] in (None, "none") or not hp["reg_decoupled"] or not lam > 0:
        return
    # the pulled weights' peak rates (schedules and layer decay only lower them): the
    # backbone's where its own weights train, and the adapters' (a frozen backbone's adapters
    # are all that is pulled)
    rates = [hp["lr_backbone"] if own_weights_train(hp["freeze_backbone"], adapter) else 0.0]
    if adapter is not None:
        rates.append(hp["lr_head"] if hp["lr_adapter"] is None else hp["lr_adapter"])
    rate = max(rates)
    if 2 * rate * lam >= 1:
        raise SFTError(
            f"model.reg_lambda={lam:g} with a learning rate of {rate:g}: the decoupled pull "
            f"keeps 1 - 2 lr lambda = {1 - 2 * rate * lam:.3g} of the weights' distance to "
            "their target a step, which must be above 0; give model.reg_lambda below "
            f"{1 / (2 * rate):.3g}"
        )


def split_batch(batch: Any) -> tuple[Any, torch.Tensor]:
    """(inputs, labels) of an image batch `(x, y)` or a text batch `{..., "labels": y}`."""
    if isinstance(batch, Mapping):
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    return batch[0], batch[1]


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax in float32: under mixed precision the logits are bf16/fp16, whose softmax rounds
    the probabilities to 2-3 digits (they would not sum to 1)."""
    return logits.float().softmax(-1)


# settings that shape an optimizer's state, or how a step runs on it: a restored optimizer keeps
# its own (torch placed its state for them; amsgrad turned on finds no max_exp_avg_sq)
STATE_SETTINGS = ("fused", "foreach", "capturable", "differentiable", "amsgrad")
# schedules that set the rate and cycle the momentum themselves, and the settings they cycle
CYCLING_SCHEDULES = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)
CYCLED_SETTINGS = ("betas", "momentum")


def _same_setting(a: Any, b: Any) -> bool:
    """Whether two values of an optimizer setting are the same (betas saved as a tuple, read
    back as one or as a list)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return a == b


class SFTClassifier(L.LightningModule):
    """Backbone `self.backbone` (features h) and `self.head` (FusedHead: base + zero-init branch).

    All sub-configs (`backbone`, `head`, `optimizer`, `scheduler`) are Hydra configs with a
    `_target_`, instantiated here so that a checkpoint alone can rebuild the model.

    layer_decay: layer-wise LR decay for backbones with layer ids (the huggingface text backbone):
    layer k of L trains at lr_backbone * layer_decay ** (L + 1 - k), embeddings (k = 0) slowest;
    None: one lr_backbone for the whole backbone.
    reg_decoupled: apply lambda R(theta) as a decoupled pull on the weights before each optimizer
    step, `theta <- theta - lr * lambda * dR/dtheta` with the group's lr (as AdamW's weight decay
    is to L2: lambda is on another scale than in the loss), instead of through the gradient that
    Adam normalises. One pass over the weights instead of two (sft.models.regularizers).
    reg_every: with reg_decoupled, apply the pull every k-th optimizer step, compounded over
    the k steps' learning rates (lazy regularisation): a k-th of the memory traffic, and the
    same pull as k single ones up to first order in lr * lambda (exactly, were nothing else
    moving the weights). Held pulls are also applied before each validation and at each epoch's
    end (last.ckpt holds the trained weights); a step checkpoint saved between pulls carries
    them for resume.
    log_regularizer: also compute R(theta) every step and log it (`train/reg`), with `train/loss`
    the regularised objective in the gradient form (the decoupled pull's lambda is on another
    scale, as AdamW's weight decay is: `train/loss` stays the data term); off, `train/loss` is
    the data term and R's gradient is added without computing R (sft.models.regularizers).
    channels_last: NHWC memory layout for image backbones; None: the backbone's registered
    default (on for convolutional networks, where it measured faster on CPU).
    compile: `torch.compile` the backbone (dynamic shapes: text batches vary in length).
    adapter: LoRA adapters inside the backbone (conf/adapter/lora.yaml, sft.models.adapters):
    only they, the head (and biases / norms if asked) train; None: no adapters.
    lr_adapter: the adapters' learning rate (layer decay scales it too); None: lr_head.
    fast_dropout: CPU dropout masks from a quarter of torch's random draws (another random
    stream than torch's dropout; sft.models.fast_dropout).
    fast_depthwise: image backbones' depthwise convolutions time each part of their step
    (forward pass, input and weight gradients) once per shape on CPU, in autocast's dtype and
    in fp32, the weight gradient also by three other ways, and keep the fastest
    (sft.models.depthwise_conv); the same results to float rounding, but which way is used is
    timed, so false (or trainer.deterministic) for seeded runs that repeat bit for bit; with
    false they compute in fp32 under CPU autocast (bf16-mixed), where some of oneDNN's bf16
    kernels are slow.
    fast_pointwise: image backbones' 1x1 convolutions time their backward pass once per shape on
    CPU, oneDNN's convolution backward against matrix products, and keep the faster
    (sft.models.pointwise_conv); timed like fast_depthwise, so false (or
    trainer.deterministic) for runs that repeat bit for bit.
    metrics: the metrics logged for each split, by name (sft.models.metrics: acc, f1, top5,
    binary_f1, precision, recall, mcc, auroc, ece; auroc and ece for validation and test only); None:
    acc and f1. acc is always among them.
    """

    def __init__(
        self,
        backbone: Mapping,
        num_classes: Annotated[int, Ge(2)],
        head: Mapping | None = None,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        lr_backbone: NonNegative = 1e-4,
        lr_head: NonNegative = 1e-3,
        layer_decay: Annotated[float, Interval(gt=0, le=1)] | None = None,
        weight_decay: NonNegative = 0.01,
        warmup_ratio: Fraction = 0.0,
        # 1 trains towards the uniform distribution whatever the label: nothing is learnt
        label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
        regularizer: str = "none",
        reg_lambda: NonNegative = 0.0,
        reg_decoupled: bool = False,
        reg_every: Annotated[int, Ge(1)] = 1,
        freeze_backbone: bool = False,
        freeze_norm_stats: bool = False,
        linear_probe: Mapping | None = None,
        log_regularizer: bool = False,
        channels_last: bool | None = None,
        compile: bool = False,
        adapter: Mapping | None = None,
        lr_adapter: NonNegative | None = None,
        fast_dropout: bool = True,
        fast_depthwise: bool = True,
        fast_pointwise: bool = True,
        metrics: list[str] | None = None,
    ) -> None:
        super().__init__()
        for part, given in (("backbone", backbone), ("head", head)):
            if isinstance(given, nn.Module):  # (was: "'TinyNet' object is not iterable")
                raise SFTError(
                    f"{part}: SFTClassifier takes the {part}'s settings (a config or dict with "
                    f"its _target_), which its checkpoints record to rebuild it, not a built "
                    f"{type(given).__qualname__}"
                )
        # before the backbone, whose weights take a while to load
        metric_names = check_metric_names(metrics, num_classes)
        # Convert before save_hyperparameters(): it reads the current values of the init args.
        backbone, head, optimizer, scheduler, linear_probe, adapter = map(
            _plain, (backbone, head, optimizer, scheduler, linear_probe, adapter)
        )
        if isinstance(backbone, dict):
            backbone = config_as_saved(backbone)
        # logger=False: train.py logs the whole run config once
        self.save_hyperparameters(logger=False)
        # a subclass's init args are read too, from its frame (`**kwargs` as Hydra passed them:
        # DictConfig, which made every checkpoint of it unreadable weights-only): as converted
        converted = dict(backbone=backbone, head=head, optimizer=optimizer, scheduler=scheduler)
        converted.update(linear_probe=linear_probe, adapter=adapter)
        for key, value in self.hparams.items():
            self.hparams[key] = converted[key] if key in converted else _plain(value)
        # what the backbone takes (modality, normalisation): the datamodule is configured by it
        self.input_spec = resolve_input_spec(backbone)
        self.backbone: nn.Module = instantiate(backbone)
        positions = getattr(self.backbone, "max_positions", None)
        if positions is not None:  # known once built (a text backbone's position table)
            self.input_spec = replace(self.input_spec, max_positions=positions)
        width = getattr(self.backbone, "num_features", None)
        try:  # an int, or another integer type (numpy's)
            width = operator.index(width) if not isinstance(width, bool) else None
        except TypeError:
            width = None
        if width is None or width < 1:
            raise SFTError(
                f"model.backbone: {type(self.backbone).__name__} sets no num_features (got "
                f"{getattr(self.backbone, 'num_features', None)!r}): a backbone returns (batch, D) "
                "features and sets self.num_features = D (README: Your own configs and code)"
            )
        head = head or {"_target_": "sft.models.heads.FusedHead"}
        self.head: nn.Module = instantiate(head, in_features=width, num_classes=num_classes)
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        if lr_adapter is not None and adapter is None:
            rank_zero_warning(
                log,
                f"model.lr_adapter={lr_adapter}: no adapter is chosen (adapter=lora adds them), "
                "so it changes nothing",
            )
        lrs = [lr_head, lr_backbone if own_weights_train(freeze_backbone, adapter) else 0.0]
        if adapter is not None:
            lrs.append(lr_head if lr_adapter is None else lr_adapter)
        if linear_probe is not None:
            check_probe_settings(linear_probe)
        if linear_probe is None and max(lrs) == 0:
            why = (
                "adapter=lora freezes the backbone's own weights, so lr_backbone trains none"
                if adapter is not None
                else "method=linear_probe freezes the backbone and sets lr_head=0"
            )
            raise SFTError(
                f"model.linear_probe is null and no learning rate is above 0 ({why}): nothing "
                "would be fitted; set model.linear_probe (e.g. '{max_iter: 200}') or a learning "
                "rate"
            )
        lora: LoraSettings | None = None
        if adapter is not None:
            if freeze_backbone:
                raise SFTError(
                    "adapter=lora trains adapters inside the backbone, but it is frozen "
                    "(model.freeze_backbone=true, as method=linear_probe sets): for LoRA, "
                    "method=lora or lp_lora (or model.freeze_backbone=false); for a linear "
                    "probe, leave adapter=lora out"
                )
            name = str(backbone.get("name", backbone.get("_target_")))
            lora = LoraSettings.from_config(adapter)
            if lora.save_only_trainable and not (
                backbone.get("pretrained") or backbone.get("checkpoint")
            ):
                # a seeded run rebuilds the same random weights (resume= works), nothing else can
                rank_zero_warning(
                    log,
                    "adapter.save_only_trainable=true keeps the base weights out of the "
                    "checkpoints, but the backbone loads no weights (no model.backbone.pretrained "
                    "or checkpoint): only a process seeded like "
                    "this run rebuilds its random base weights (resume=, sft-eval with the same "
                    "seed); sft-predict and sft-export will refuse these checkpoints. Set "
                    "adapter.save_only_trainable=false to keep them usable everywhere",
                )
            add_lora(self.backbone, lora, name)
            if lora.init_from and lora.target_modules is None:
                # the layers the peft folder named, in the settings checkpoints keep: a model
                # rebuilt from them (sft-eval, resume=) reads no folder (was: its default layers,
                # which the checkpoint's weights did not fit)
                self.hparams["adapter"]["target_modules"] = exactly(adapter_layers(self.backbone))
            # small checkpoints: Lightning loads them without the frozen weights
            self.strict_loading = not lora.save_only_trainable
        if not any(p.requires_grad for p in self.parameters()):
            # was: "optimizer got an empty parameter list", a traceback, after the data was read
            raise SFTError(
                "nothing would train: model.freeze_backbone=true and the head has no trainable "
                "weight (model.head.freeze_base=true with model.head.branch=none); for a linear "
                "probe alone: method=linear_probe"
            )
        if channels_last is None:
            channels_last = backbone_speed_hints(backbone).channels_last
            if channels_last and rank_zero_only.rank == 0:
                # this module's logger: sft-eval/-predict/-export leave its INFO lines out
                log.info("model.channels_last=null -> on (the backbone family's default)")
        self.channels_last = bool(channels_last)
        if self.channels_last and self.input_spec.modality != "image":
            # a warning, not an error: checkpoints saved with it still load
            rank_zero_warning(
                log,
                "model.channels_last=true lays out image batches; this text backbone takes "
                "token ids, so it changes nothing",
            )
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            if adapter is not None and adapter.get("use_dora"):
                adapters_in_contiguous_layout(self.backbone)
        for key, value in (("fast_depthwise", fast_depthwise), ("fast_pointwise", fast_pointwise)):
            if not isinstance(value, bool):
                raise SFTError(f"model.{key}: expected true or false, got {value!r}")
        if self.input_spec.modality == "image":
            self._speed_up_image_layers(compile, fast_depthwise, fast_pointwise)
        if not isinstance(fast_dropout, bool):
            raise SFTError(f"model.fast_dropout: expected true or false, got {fast_dropout!r}")
        if fast_dropout:
            # the same Bernoulli masks from a quarter of the random draws (sft.models.fast_dropout)
            swapped = use_fast_dropout(self.backbone) + use_fast_dropout(self.head)
            if swapped and rank_zero_only.rank == 0:
                log.info(
                    f"{swapped} dropout layers draw their masks with FastDropout"
                    # it steps aside while torch.compile traces (sft.models.fast_dropout)
                    + (", but those of the compiled backbone torch's dropout" if compile else "")
                )
        if compile:
            # in place: the state_dict keys stay those of the plain backbone
            self.backbone.compile(dynamic=True)
            if rank_zero_only.rank == 0:
                log.info("model.compile=true: the backbone compiles at its first batches")
        # with adapters, R(theta) is over what trains (sft.models.regularizers)
        self.regularizer = create_regularizer(
            regularizer, self.backbone, trainable_only=adapter is not None
        )
        if isinstance(reg_every, bool) or not isinstance(reg_every, int) or reg_every < 1:
            raise SFTError(f"model.reg_every: expected an integer >= 1, got {reg_every!r}")
        if reg_every > 1 and not reg_decoupled:
            raise SFTError(
                f"model.reg_every={reg_every} needs model.reg_decoupled=true: only the decoupled "
                "pull can be held back and applied at once; for the gradient form set "
                "model.reg_every=1 (and model.reg_lambda on the loss's scale, e.g. 1e-5)"
            )
        # the decoupled pulls held back since the last one applied (reg_every): per optimizer
        # group, the fraction of theta - target to keep, and how many steps they cover (0: none)
        self._reg_held: list[float] = []
        self._reg_held_steps = 0
        # the steps this fit's LR schedule spans (configure_optimizers), from step 0
        self._schedule_steps: int | None = None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # Persistent flag: a resumed or evaluated model must not be re-probed.
        self.register_buffer("linear_probe_done", torch.tensor(False))

        metrics = create_metrics(metric_names, num_classes)
        self.train_metrics = create_metrics(metric_names, num_classes, training=True).clone(
            prefix="train/"
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_acc_best = Float32Max()
        # the split's mean loss, weighted by batch size and summed over DDP ranks by torchmetrics:
        # Lightning's sync_dist mean truncated the ranks' example counts to integers (gloo), so
        # an odd split's loss came out N/(N-1) too high. NaN is kept (replaced by NaN), not
        # skipped with a warning; not nan_strategy="disable", which drops the weights too
        # (torchmetrics 1.9, issue #3434: the mean of batch means, so the loss of a split with a
        # smaller last batch changed with the batch size)
        self.val_loss = Float32Mean(nan_strategy=float("nan"))
        self.test_loss = Float32Mean(nan_strategy=float("nan"))
        # from a resumed checkpoint (on_load_checkpoint), applied in on_train_start
        self._restored_acc_best: float | None = None
        # each optimizer group's settings as this run configures them (configure_optimizers),
        # which a restored optimizer's replace (on_train_start)
        self._configured_groups: list[dict[str, Any]] = []
        # an image batch went through the backbone: its size is one the backbone takes
        self._images_ran = False
        # the word embedding's gradient kept between training steps (on_train_start)
        self._kept_grads: KeptEmbeddingGrads | None = None
        # what a small checkpoint leaves out: the weights frozen now, with the adapters added
        self._frozen_names = set(frozen_parameters(self)) if not self.strict_loading else set()
        # their hash, which the checkpoint's readers check (setup, before a fit casts them)
        self._base_hash: str | None = None
        trainable, total = self.parameter_counts()
        if rank_zero_only.rank == 0:  # the run log (Lightning's rank_zero_info bypasses it)
            log.info(
                f"model: {trainable:,} of {total:,} parameters train "
                f"({100 * trainable / total:.2f} %)"
                + (f", LoRA adapters r={lora.r}" if lora is not None else "")
            )

    def _speed_up_image_layers(
        self, compile: bool, fast_depthwise: bool, fast_pointwise: bool
    ) -> None:
        """The image backbone's layers as they run fastest on CPU, with the same weights."""
        if not compile:
            # conv -> BN runs as one convolution while the BN's statistics are frozen
            # (freeze_norm_stats, evaluation); checked on a small batch of images. Not under
            # torch.compile: EfficientNet-Lite0's compiled folded step was 40 % slower (169
            # vs 280 img/s eager folded, benchmarks/vs_anchors.py)
            example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
            folded = fold_frozen_norms(self.backbone, example)
            if folded and rank_zero_only.rank == 0:
                fused = folded_activations(self.backbone)
                log.info(
                    f"{folded} batch norms fold into their convolutions when frozen"
                    + (
                        f", {fused} with the activation after them in the same call"
                        if fused
                        else ""
                    )
                )
            out_of_place = out_of_place_activations(self.backbone, example)
            if out_of_place and rank_zero_only.rank == 0:
                log.info(f"{out_of_place} activations run out of place (no input copy)")
        # each part of the depthwise convolutions in whichever of autocast's dtype and fp32 is
        # faster (oneDNN's bf16 kernels are faster for some, up to 140x slower for others), and
        # oneDNN's slow weight gradients (5x5 filters, 2x2 maps) from its fast 3x3 kernel, as
        # matrix products or a forward convolution where that is faster, timed once per shape;
        # eager only (compiled: fp32 under autocast). After the folding, whose convolutions it
        # routes too
        timed = fast_depthwise and not compile
        routed = route_depthwise_convs(self.backbone, timed=timed)
        if routed and rank_zero_only.rank == 0:
            # the trainer's precision and determinism are not known here: said as conditions
            how = (
                "are timed once per shape on CPU and keep the fastest way: under autocast each "
                "part of their step in its dtype or fp32, weight gradients also from 3x3 blocks, "
                "matrix products or a forward convolution (in fp32 too, where oneDNN's are "
                "slow); deterministic runs keep torch's kernels"
                if timed
                else "compute in fp32 when under CPU autocast"
            )
            log.info(f"{routed} depthwise convolutions {how}")
        # 1x1 convolutions' backward as matrix products where those are faster (oneDNN's is
        # slow on small maps), timed once per shape; eager only, after the folding too
        pointwise = route_pointwise_convs(self.backbone) if fast_pointwise and not compile else 0
        if pointwise and rank_zero_only.rank == 0:
            if self.channels_last:
                how = (
                    "time their backward once per shape on CPU, oneDNN's against matrix "
                    "products, and keep the faster; deterministic runs keep torch's kernels"
                )
            else:  # only 1x1 maps (squeeze-excite) are in both layouts
                how = (
                    "keep torch's kernels on NCHW maps (model.channels_last=false); only "
                    "those on 1x1 maps time their backward against matrix products"
                )
            log.info(f"{pointwise} 1x1 convolutions {how}")

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameters of backbone and head (adapters included)."""
        params = [*self.backbone.parameters(), *self.head.parameters()]
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    # ---- forward -------------------------------------------------------------------------
    def features(self, inputs: Any) -> torch.Tensor:
        if isinstance(inputs, Mapping):
            h = self.backbone(**inputs)
        else:
            h = self._image_features(self._in_memory_format(inputs))
        self._check_features(h)
        return h

    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone on a batch of images; on the first batch, a model of create_backbone's
        made for other input sizes fails as one line saying how to resize: timm's fixed-size
        models assert the size, others fail in a layer (a RuntimeError). Whether the size was
        the cause is tried (`fails_for_size`): other errors keep their traceback (was: any
        RuntimeError said as the size). Later batches have the first one's size, so their
        errors are not about it. A backbone class of the user's own keeps its error and
        traceback: there it is more often a bug in its forward (a bad `view`, an assert) than
        a size, and model.backbone.input_size is not its setting."""
        if self._images_ran:
            return self.backbone(images)
        try:
            h = self.backbone(images)
        except (torch.OutOfMemoryError, torch._dynamo.exc.TorchDynamoException):
            raise
        except (AssertionError, RuntimeError) as err:
            if out_of_memory(err) is not None:
                # a batch too large, not a size: as raised (sft's command says it in one line,
                # and Lightning's BatchSizeFinder catches it)
                raise
            if get_object(str(self.hparams.backbone.get("_target_"))) is not create_backbone:
                raise
            size = getattr(self.backbone, "size", None)  # ResizeInput's (input_size)
            failed_at = (size, size) if size else tuple(images.shape[-2:])
            if not fails_for_size(self.backbone, self.hparams.backbone, images, failed_at):
                raise
            seen = (
                f"{size}x{size} images (model.backbone.input_size={size})"
                if size
                else "images at the data's size (model.backbone.input_size=null)"
            )
            timm = " (timm: +model.backbone.img_size=<size>)"
            raise SFTError(
                f"model.backbone: {type(inner_model(self.backbone)).__name__} refused {seen} "
                f"({first_line(err)}); set model.backbone.input_size to a size "
                "it takes, or build it for these"
                + (timm if self.hparams.backbone.get("name") == "timm" else "")
            ) from err
        self._images_ran = True
        return h

    def _check_features(self, h: Any) -> None:
        """The backbone's contract (README): (batch, num_features) features."""
        width = self.backbone.num_features
        if not isinstance(h, torch.Tensor) or h.ndim != 2 or h.shape[-1] != width:
            got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise SFTError(
                f"model.backbone: {type(inner_model(self.backbone)).__name__} returned {got}, "
                f"expected (batch, {width}) features (its num_features); pool its output to that"
            )

    def _in_memory_format(self, inputs: Any) -> Any:
        """Image batches in the backbone's layout (NHWC when channels_last)."""
        if self.channels_last and isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def forward(self, inputs: Any) -> torch.Tensor:
        if self.hparams.freeze_backbone:
            with torch.no_grad():
                h = self.features(inputs)
        else:
            h = self.features(inputs)
        return self.head(h)

    def train(self, mode: bool = True) -> "SFTClassifier":
        # A frozen backbone also keeps its norm statistics frozen (eval mode), whoever calls
        # .train(): Lightning's loops, the unfreeze callback or the user.
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.backbone.parameters()):
            self.backbone.eval()
        elif mode and self.hparams.freeze_norm_stats:
            # Batch-norm layers keep their pretrained running statistics (their affine weights
            # still train): small fine-tuning batches of shifted data (e.g. upsampled CIFAR)
            # give noisy batch statistics that move the features away from what the
            # linear-probed head was fitted on.
            freeze_norm_statistics(self.backbone)
        return self

    # ---- steps ---------------------------------------------------------------------------
    def _shared_step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs, y = split_batch(batch)
        logits = self(inputs)
        # in fp32 under every precision (autocast does so for the mixed ones): bf16-true's and
        # 16-true's half logits gave a loss rounded to 3 digits
        return self.criterion(logits.float(), y), logits, y

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        try:
            ce, logits, y = self._shared_step(batch)
        except ValueError as exc:
            if ONE_VALUE_PER_CHANNEL not in str(exc):
                raise
            # (was: torch's ValueError traceback, mid-epoch)
            raise SFTError(
                f"a training batch of {len(split_batch(batch)[1])} example left a batch-norm "
                "layer one value per channel, which it cannot train on (the epoch's last batch "
                "with data.drop_last=false?): set data.drop_last=true or another "
                "data.batch_size, or model.freeze_norm_stats=true"
            ) from exc
        logged = ce.detach()
        if self.hparams.reg_lambda > 0 and self.hparams.log_regularizer:
            reg = self.regularizer(self.backbone)
            if not self.hparams.reg_decoupled:  # a pull is no term of an objective
                logged = logged + self.hparams.reg_lambda * reg
            self.log("train/reg", reg, on_step=True, on_epoch=False)
        # update(), not forward(): only epoch values are logged, per-batch values would be
        # computed for nothing on every step
        # soft labels (MixUp, CutMix): scored against each example's larger share
        self.train_metrics.update(logits, y.argmax(-1) if y.is_floating_point() else y)
        # the mean over DDP ranks, as train/acc's (was: rank 0's batches alone)
        self.log("train/loss", logged, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        # lambda R(theta) enters through its gradient in on_before_optimizer_step
        return ce

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # After backward (and AMP unscaling), before clipping and the step: the gradient of
        # lambda R(theta), once per optimizer step (Lightning divides accumulated losses by the
        # number of accumulated batches, so autograd would add it once in total as well).
        # Decoupled: the weights move here, with the gradient left as the data term's.
        lam = self.hparams.reg_lambda
        decoupled = lam > 0 and self.hparams.reg_decoupled
        trainer = self._trainer  # None: called outside Lightning's loop
        if trainer is not None and ((lam > 0 and not decoupled) or clips_fused(trainer, optimizer)):
            unscale_fused(trainer, optimizer)  # 16-mixed: they were on the loss scale
        if decoupled:
            # this step's pull shrinks theta - target by 1 - 2 lr lambda in each group whose
            # weights train now (a frozen group, e.g. before BackboneUnfreeze, is not pulled)
            keep = [
                1.0 - 2.0 * group["lr"] * lam
                if any(p.requires_grad for p in group["params"])
                else 1.0
                for group in optimizer.param_groups
            ]
            keep = [a * b for a, b in zip(self._held_for(optimizer), keep, strict=True)]
            self._reg_held, self._reg_held_steps = keep, self._reg_held_steps + 1
        elif lam > 0:
            self.regularizer.add_gradient_(self.backbone, lam)
        # >=: a run resumed with a smaller reg_every (or without the decoupled pull) applies
        # what its checkpoint held at once
        if self._reg_held_steps and (
            not decoupled or self._reg_held_steps >= self.hparams.reg_every
        ):
            self._apply_held_pull(optimizer)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Lightning's AMP plugin refuses to clip for the fused AdamW of the model configs (was: a
        # RuntimeError at the first step of trainer.gradient_clip_val=1 under bf16-mixed)
        if clips_fused(self.trainer, optimizer):
            clip_fused(self.trainer, optimizer, gradient_clip_val, gradient_clip_algorithm)
        else:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )

    def _held_for(self, optimizer: torch.optim.Optimizer) -> list[float]:
        """The held pulls per group of `optimizer`: a group added since (Lightning's
        BaseFinetuning adds some) held nothing."""
        return self._reg_held + [1.0] * (len(optimizer.param_groups) - len(self._reg_held))

    def _apply_held_pull(self, optimizer: torch.optim.Optimizer) -> None:
        self.regularizer.decay_(self.backbone, optimizer, self._held_for(optimizer))
        self._reg_held, self._reg_held_steps = [], 0

    def on_validation_start(self) -> None:
        # validation, the checkpoints saved after it and the test of the best one see weights
        # with every pull applied; a resumed run applies them at the same steps
        optimizers = self.trainer.optimizers
        if self._reg_held_steps and optimizers and not self.trainer.sanity_checking:
            self._apply_held_pull(optimizers[0])

    def on_train_epoch_end(self) -> None:
        # the pulls of an unfinished reg_every cycle, before last.ckpt is written at the end of
        # training (callbacks' on_train_end runs before this module's: it held the weights
        # without them, which sft-eval, -predict and -export read); a resumed run applies them
        # at the same step
        if self._reg_held_steps:
            self._apply_held_pull(self.trainer.optimizers[0])

    def on_train_end(self) -> None:
        if self._reg_held_steps:  # a way out of training without the epoch's end
            self._apply_held_pull(self.trainer.optimizers[0])
        self._give_back_kept_grads()

    def _give_back_kept_grads(self) -> None:
        if self._kept_grads is not None:
            self._kept_grads.detach()
            self._kept_grads = None

    def on_train_start(self) -> None:
        self.train()  # its rules: see on_fit_start
        # The sanity-check validation must not count towards the best accuracy; a resumed run
        # starts from the best of the validations before its checkpoint.
        self.val_acc_best.reset()
        if self._restored_acc_best is not None:
            self.val_acc_best(self._restored_acc_best)
        self._take_this_runs_optimizer_settings()
        self._follow_this_runs_schedule()
        # Large embedding tables (a text encoder's word embedding) keep their gradient between
        # steps, only the used rows zeroed, instead of torch's fresh table-sized gradient each
        # step (sft.models.kept_embedding_grad): in one process (DDP waits for autograd's own
        # gradients), not compiled. Attached afresh by every fit (one stopped by an exception
        # never reached on_train_end).
        self._give_back_kept_grads()
        single = isinstance(self.trainer.strategy, SingleDeviceStrategy)
        if single and not self.hparams.compile:
            self._kept_grads = KeptEmbeddingGrads.attach(self.backbone)

    def optimizer_zero_grad(
        self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._kept_grads is None:
            optimizer.zero_grad()
        else:
            self._kept_grads.zero_grad(optimizer)

    def _take_this_runs_optimizer_settings(self) -> None:
        """A run from a checkpoint (resume=, ckpt_path=) restores the optimizer's state and
        with it the settings of the run that saved it: its learning rates and weight decay,
        where this run's config recorded the ones asked for (was: `resume=... model.lr_head=`
        lower after a divergence trained on at the old rate, without a word). This run's
        settings (`_configured_groups`) replace them, its learning rates as the base rates of
        a closed-form schedule (sft's: transformers' LambdaLRs) or of none. A schedule of
        another kind keeps the rates and momentum it sets itself (OneCycleLR, CyclicLR)."""
        optimizer = self.trainer.optimizers[0] if self.trainer.optimizers else None
        if self.trainer.ckpt_path is None or optimizer is None:
            return  # nothing restored
        if len(optimizer.param_groups) != len(self._configured_groups):
            return  # groups a callback added (gradual unfreezing): not this config's
        schedulers = [
            c.scheduler
            for c in self.trainer.lr_scheduler_configs
            if c.scheduler.optimizer is optimizer
        ]
        closed_form = all(isinstance(s, torch.optim.lr_scheduler.LambdaLR) for s in schedulers)
        cycling = any(isinstance(s, CYCLING_SCHEDULES) for s in schedulers)
        changed = []
        for group, configured in zip(optimizer.param_groups, self._configured_groups, strict=True):
            for key, value in configured.items():
                if key in STATE_SETTINGS or (key == "lr" and not closed_form):
                    continue
                if cycling and key in CYCLED_SETTINGS:
                    continue
                # a schedule's base rate (torch keeps it as initial_lr); the rate now follows it
                # (a run without a schedule now, resumed from one with: its rate itself)
                based = key == "lr" and "initial_lr" in group and schedulers
                held = "initial_lr" if based else key
                if _same_setting(group.get(held), value):
                    continue
                changed.append(f"{group.get('name', '?')} {key} {group.get(held)} -> {value}")
                group[held] = value
        for scheduler in schedulers if closed_form else ():
            scheduler.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        # a torch schedule on the group's rate (StepLR, ...) keeps its own base: said, not
        # changed (a cycling one's base is its own settings', not the group's)
        kept = [
            f"{g.get('name', '?')} {g['initial_lr']} (this run: {c['lr']})"
            for g, c in zip(optimizer.param_groups, self._configured_groups, strict=True)
            if not closed_form
            and not cycling
            and "initial_lr" in g
            and "lr" in c
            and not _same_setting(g["initial_lr"], c["lr"])
        ]
        if kept:
            rank_zero_warning(
                log,
                f"model.scheduler ({type(schedulers[0]).__name__}) restored keeps the "
                f"checkpoint's base rates: {first_few(kept, 4)}; this run's rates apply under "
                "transformers' schedules or none",
            )
        if changed and rank_zero_only.rank == 0:
            log.info(
                "the checkpoint's optimizer settings are replaced by this run's: "
                + first_few(changed, 6)
            )

    def _follow_this_runs_schedule(self) -> None:
        """A resumed run with another length (max_steps, max_epochs) has a new schedule, but
        the restored optimizer holds the old one's learning rate, which its next step used
        (0 at the old end). Each group's rate is set from this run's schedule at the restored
        step: the same value when the schedule did not change, else said."""
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                continue  # the transformers schedules sft configures are LambdaLRs
            groups = scheduler.optimizer.param_groups
            rates = [
                base * factor(scheduler.last_epoch)
                for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
            ]
            restored = [group["lr"] for group in groups]
            for group, rate in zip(groups, rates, strict=True):
                group["lr"] = rate
            if self.trainer.ckpt_path is not None:
                self._say_schedule_changed(scheduler.last_epoch, groups, restored, rates)

    def _say_schedule_changed(
        self, step: int, groups: list[dict], restored: list[float], rates: list[float]
    ) -> None:
        """A run from a checkpoint whose schedule spans other steps than the checkpoint's (more
        epochs, other data: it counts this run's from step 0) jumped to another learning rate,
        and past the schedule's end trained at its end rate (0 for a linear schedule) or a
        cosine's next cycle, without a word."""
        total = self._schedule_steps
        jumped = [
            f"{group.get('name', i)} {before:.3g} -> {after:.3g}"
            for i, (group, before, after) in enumerate(zip(groups, restored, rates, strict=True))
            if not math.isclose(before, after, rel_tol=0.01, abs_tol=1e-12)
        ]
        past = total is not None and step >= total
        if not jumped and not past:
            return
        span = f" spans {total} steps from step 0" if total is not None else ""
        said = (
            f"the learning rates go from the checkpoint's to this run's at step {step} "
            f"({first_few(jumped, 3)}): its model.lr_* and schedule (model.scheduler{span}: "
            "trainer.max_epochs x the data's batches, or trainer.max_steps) apply"
            if jumped
            else f"this run's schedule (model.scheduler){span}"
        )
        if past:
            said += (
                f"; step {step} is past its end: the schedule's rate there is its end's (0 for "
                "a linear schedule; a cosine's starts over): raise trainer.max_epochs or "
                "trainer.max_steps to cover the checkpoint's steps too, or start a new run from "
                "its weights with +model.backbone.checkpoint=<checkpoint> (a schedule of its own)"
            )
        rank_zero_warning(log, said)

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits, y = self._shared_step(batch)
        self.val_metrics.update(logits, y)
        self.val_loss.update(loss, weight=y.numel())
        self.log("val/loss", self.val_loss, on_epoch=True, prog_bar=True)
        self.log_dict(self.val_metrics, on_epoch=True, prog_bar=True)
        # for callbacks (sft-eval's predictions come from the pass that scores them)
        return {"logits": logits, "labels": y}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.state.fn != TrainerFn.FITTING:  # sft-eval's one validation: no "best"
            return
        self.val_acc_best(self.val_metrics["acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits, y = self._shared_step(batch)
        self.test_metrics.update(logits, y)
        self.test_loss.update(loss, weight=y.numel())
        self.log("test/loss", self.test_loss, on_epoch=True)
        self.log_dict(self.test_metrics, on_epoch=True)
        return {"logits": logits, "labels": y}

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, y = split_batch(batch)
        return {"probs": class_probabilities(self(inputs)), "labels": y}

    def _datamodule(self) -> ClassificationData | None:
        """The trainer's datamodule (None without a trainer or with plain dataloaders); one that
        does not implement sft's datamodule contract is a user error."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is not None and not isinstance(datamodule, ClassificationData):
            raise SFTError(not_a_datamodule(datamodule, datamodule_gaps(datamodule)))
        return datamodule

    def setup(self, stage: str) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            destroy_process_group_at_exit()  # each rank, for any strategy or entry point
        if stage == "fit" and self._frozen_names and self._base_hash is None:
            # the base weights as built, in fp32, as the small checkpoints' readers build them:
            # Lightning casts them after this hook under trainer.precision=bf16-true (hashed at
            # the first save, they were the bf16-rounded ones, and every reader refused them)
            self._base_hash = self._frozen_weights_hash()
        if stage == "fit":
            self._check_monitors_logged()
        datamodule = self._datamodule()
        if getattr(datamodule, "input_configured", True) is False and self.input_spec.modality:
            # sft's entry points call it; a user's own script with a plain Trainer may not
            # (was: images at ImageNet's statistics and 224 px for EfficientNet-Lite0's 0.5/0.5)
            rank_zero_warning(
                log,
                f"{type(datamodule).__name__} was set up without this model's input settings "
                f"({self.input_spec}): call datamodule.configure_input(model.input_spec) before "
                "trainer.fit/validate/test, as sft-train does",
            )
        found = datamodule.num_classes if datamodule is not None else None
        names = getattr(datamodule, "class_names", None)
        if found is not None and names is not None and len(names) != found:
            # was: trained without a word, then sft-eval's predictions.csv an IndexError
            raise SFTError(
                f"{type(datamodule).__name__} has {len(names)} class_names for num_classes="
                f"{found}: give one name per class"
            )
        if found is not None and found != self.hparams.num_classes:
            # fit: the config's num_classes is wrong; test/predict (sft-eval): the data is
            if stage == "fit" and found < 2:
                fix = "a classifier needs at least 2 classes in its training data"
            elif stage == "fit" and getattr(datamodule, "class_count_hint", None):
                fix = f"{datamodule.class_count_hint}; or set model.num_classes={found}"
            elif stage == "fit":
                fix = f"set model.num_classes={found}"
            else:
                fix = (
                    f"this model was trained for {self.hparams.num_classes} classes: evaluate it "
                    "on data with those classes"
                )
            counted = f"{found} class" + ("" if found == 1 else "es")
            raise SFTError(
                f"model.num_classes={self.hparams.num_classes} but the data has {counted} "
                f"({type(datamodule).__name__}); {fix}"
            )

    def _check_monitors_logged(self) -> None:
        """SFTError for a callback monitoring one of model.metrics' metrics this model does not
        log, before anything runs (was: named after the sanity check, with no word of
        model.metrics)."""
        hooks = ("validation_step", "on_validation_epoch_end", "on_validation_end")
        if self._trainer is None or any(
            getattr(type(self), h) is not getattr(SFTClassifier, h) for h in hooks
        ):
            return  # set up without a trainer, or a subclass's own validation may log it
        logged = set(self.val_metrics) | set(self.test_metrics)
        watching: dict[str, list[str]] = {}
        for callback in getattr(self._trainer, "callbacks", []):
            monitor = getattr(callback, "monitor", None)
            split, _, name = str(monitor).partition("/")
            if split in ("val", "test") and monitor not in logged and not unregistered([name]):
                watching.setdefault(monitor, []).append(type(callback).__name__)
        for monitor, names in watching.items():
            name = monitor.partition("/")[2]
            listed = [*(self.hparams.get("metrics") or DEFAULT_METRICS), name]
            verb = "monitors" if len(names) == 1 else "monitor"
            raise SFTError(
                f"{' and '.join(dict.fromkeys(names))} {verb} '{monitor}', which this run does "
                f"not log: model.metrics does not list {name} (model.metrics=[{','.join(listed)}])"
            )

    def _frozen_weights_hash(self) -> str:
        params = dict(self.named_parameters())
        return weights_hash({name: params[name] for name in self._frozen_names})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the class, for sft-eval/-predict/-export to rebuild a subclass (a custom loss, forward)
        # rather than an SFTClassifier of its hparams
        checkpoint[MODEL_TARGET] = f"{type(self).__module__}.{type(self).__qualname__}"
        if self.val_acc_best.update_called:
            checkpoint[VAL_ACC_BEST] = float(self.val_acc_best.compute())
        if self._trainer is not None:
            checkpoint[TRAINED_PRECISION] = str(self.trainer.precision)
            checkpoint[LOGGED_METRICS] = {
                name: float(value)
                for name, value in self.trainer.callback_metrics.items()
                if isinstance(value, torch.Tensor) and value.numel() == 1
            }
        if self._reg_held_steps:  # a resumed run applies them at the same step
            checkpoint[REG_HELD] = {"keep": self._reg_held, "steps": self._reg_held_steps}
        # Lightning stores the datamodule's hparams; add its class so eval can rebuild it from the
        # checkpoint alone, and class names, so sft-predict / sft-export label outputs without it
        datamodule = self._datamodule()
        if datamodule is not None:
            checkpoint.update(datamodule.rebuild_info())
        if not self.strict_loading:  # adapter.save_only_trainable
            frozen = self._frozen_names
            state = checkpoint["state_dict"]
            checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in frozen}
            if self._base_hash is None:  # a model that saves outside a fit
                self._base_hash = self._frozen_weights_hash()
            checkpoint[BASE_WEIGHTS] = {
                "backbone": self.hparams.backbone,
                "sha256": self._base_hash,
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored_acc_best = checkpoint.get(VAL_ACC_BEST)
        held = checkpoint.get(REG_HELD)
        self._reg_held, self._reg_held_steps = (
            (list(held["keep"]), int(held["steps"])) if held is not None else ([], 0)
        )
        # Another regulariser's reference weights (model.regularizer changed, warned about when
        # the run starts): this model's own replace them, so the strict load takes the change,
        # and the other regulariser's held pulls are dropped.
        weights = checkpoint.get("state_dict")
        theirs = [k for k in weights or () if k.startswith(REGULARIZER_STATE)]
        own = self.regularizer.state_dict(prefix=REGULARIZER_STATE)
        if weights is not None and set(theirs) != set(own):
            for key in theirs:
                del weights[key]
            weights.update(own)
            self._reg_held, self._reg_held_steps = [], 0
        # a small checkpoint trains on from the base weights this model loaded: the same ones?
        if BASE_WEIGHTS in checkpoint:
            # against the hash of the weights as this process built them, where it has it: a
            # fit's true half precision has cast them since (the run's test of its best
            # checkpoint refused it: "base weights ... differ")
            check_base_weights(self, checkpoint[BASE_WEIGHTS], "the checkpoint", self._base_hash)
            # they are: taken from here by a run that saves whole checkpoints, and so loads
            # them whole (was: a traceback listing every base weight as missing)
            if weights is not None:
                for name, param in frozen_parameters(self).items():
                    weights.setdefault(name, param.detach())
        elif self._frozen_names and weights is not None:
            # a whole checkpoint continued as small ones, which name the base weights this
            # model built: they must be the checkpoint's (compared at its precision)
            params = dict(self.named_parameters())
            differ = [
                name
                for name in sorted(self._frozen_names)
                if name in weights
                and not torch.equal(
                    weights[name],
                    params[name].detach().to(weights[name].device, weights[name].dtype),
                )
            ]
            if differ:
                raise SFTError(
                    "the checkpoint's base weights differ from those this run's backbone builds "
                    f"({first_few(differ, 3)}): small checkpoints (adapter.save_only_trainable) "
                    "would name the built ones and be read with them; continue it with "
                    "adapter.save_only_trainable=false"
                )

    # ---- linear-probe initialisation (LP of LP-FT) ----------------------------------------
    def on_fit_start(self) -> None:
        backbone = self.hparams.backbone
        loads_weights = backbone.get("pretrained") or backbone.get("checkpoint")
        # only a backbone with batch norms has statistics to keep (ConvNeXt's are LayerNorms)
        has_batch_norms = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules()
        )
        if (
            self.hparams.freeze_norm_stats
            and "name" in backbone
            and not loads_weights
            and has_batch_norms
        ):
            rank_zero_warning(
                log,
                "model.freeze_norm_stats=true keeps the batch-norm statistics the backbone starts "
                "with, but it loads no weights (pretrained=false, no checkpoint): they stay at "
                "their initial values; set model.freeze_norm_stats=false to learn them",
            )
        if self.hparams.adapter is not None and "name" in backbone and not loads_weights:
            # (was: 2-8 % of adapters trained on frozen random weights, without a word)
            rank_zero_warning(
                log,
                "adapter=lora trains adapters on a backbone that loads no weights "
                "(pretrained=false, no checkpoint): its random weights stay frozen; set "
                "model.backbone.pretrained=true, or train without adapters",
            )
        if self.hparams.linear_probe is not None and not bool(self.linear_probe_done):
            datamodule = self._datamodule()
            if datamodule is None:
                raise SFTError("model.linear_probe needs a datamodule (its probe_dataloader)")
            if self._probe_batch_limit() == 0:
                # (was: torch.cat's ValueError traceback from the probe's empty feature list)
                rank_zero_warning(
                    log,
                    "trainer.limit_train_batches=0: no training batch is read, so the linear "
                    "probe does not run and the base head keeps its initial weights",
                )
            else:
                self.initialise_base_head(datamodule)
        # Lightning keeps every module in the mode it finds it (HF's from_pretrained returns
        # eval mode): every module trains here, after the probe (which switches the backbone to
        # eval and back); train()'s rules (a frozen backbone, frozen norm statistics) apply in
        # on_train_start, after Lightning's check for modules left in eval mode by mistake,
        # which their eval modes would trip ("Found 147 module(s) in eval mode ...").
        super().train(True)

    @torch.no_grad()
    def initialise_base_head(self, datamodule: ClassificationData) -> None:
        """Fit the base head on frozen features of the training set; the branch stays at zero.

        Every DDP rank computes the same deterministic solution, so no broadcast is needed.
        """

        # the trainer's precision (bf16 autocast where it was chosen), as in the training steps;
        # the regression itself runs on float32 features
        precision = getattr(self._trainer, "precision_plugin", None)  # None: no trainer

        def batches():
            for batch in islice(datamodule.probe_dataloader(), self._probe_batch_limit()):
                batch = self.transfer_batch_to_device(batch, self.device, 0)
                batch = datamodule.transform_batch(batch, train=False)
                if precision is not None:  # the run's float type, as on_after_batch_transfer
                    batch = precision.convert_input(batch)
                inputs, y = split_batch(batch)
                yield self._in_memory_format(inputs), y

        images = self.input_spec.modality != "text"
        with precision.forward_context() if precision is not None else nullcontext():
            feats, labels = extract_features(
                self.backbone, batches(), self._image_features if images else None
            )
        self._check_features(feats)
        # the probe reads its own loader, which the datamodule's batch hooks (its label check)
        # do not see: was cross_entropy's IndexError from inside L-BFGS
        check_class_indices(labels, self.hparams.num_classes, type(datamodule).__name__)
        weight, bias = fit_logistic_regression(
            feats, labels, self.hparams.num_classes, **self.hparams.linear_probe
        )
        self.head.base.weight.copy_(weight)
        self.head.base.bias.copy_(bias)
        self.linear_probe_done.fill_(True)
        # the features are float32, the head has the run's float type (64-true: float64)
        logits = self.head.base(feats.to(self.head.base.weight.dtype))
        acc = (logits.argmax(-1) == labels).float().mean().item()
        rank_zero_info(
            f"linear probe: base head fitted on {len(labels)} examples, train acc {acc:.4f}"
        )

    def _probe_batch_limit(self) -> int | None:
        """Probe batches allowed by the trainer's train-batch limit (fast_dev_run, limit_train_batches)."""
        limit = self.trainer.limit_train_batches if self._trainer is not None else 1.0
        if isinstance(limit, int) or limit == 0:  # 0.0 reads none either
            return int(limit)
        return (
            None
            if limit >= 1.0
            else max(1, int(limit * len(self.trainer.datamodule.probe_dataloader())))
        )

    # ---- optimisation ----------------------------------------------------------------------
    def _backbone_groups(self) -> list[dict]:
        """The backbone's trainable parameters at lr_backbone, its adapters' at lr_adapter;
        with layer_decay, both scaled by depth."""
        hp = self.hparams
        named = [(n, p) for n, p in self.backbone.named_parameters() if p.requires_grad]
        parts = (
            ("backbone", hp.lr_backbone, [(n, p) for n, p in named if not is_adapter_parameter(n)]),
            (
                "adapter",
                hp.lr_head if hp.lr_adapter is None else hp.lr_adapter,
                [(n, p) for n, p in named if is_adapter_parameter(n)],
            ),
        )
        groups = []
        for label, lr, params in parts:
            if not params:
                continue
            if hp.layer_decay is None:
                groups += param_groups(params, lr, hp.weight_decay, label)
            else:
                groups += layerwise_param_groups(
                    self.backbone, params, lr, hp.weight_decay, hp.layer_decay, label
                )
        return groups

    def optimizer_groups(self) -> list[dict]:
        """The optimizer's parameter groups: the head's, then (unless model.freeze_backbone)
        the backbone's and its adapters'."""
        hp = self.hparams
        groups = param_groups(
            list(self.head.named_parameters()), hp.lr_head, hp.weight_decay, "head"
        )
        if not hp.freeze_backbone:
            groups += self._backbone_groups()
        return groups

    def _warn_max_steps_cut_short(self) -> None:
        """Lightning stops at whichever of max_epochs and max_steps comes first (was: no word;
        HF Trainer's max_steps overrides its epochs). Not under fast_dev_run, which sets
        max_steps itself."""
        trainer = self._trainer  # None: called outside a Trainer (tests, a user's own loop)
        if trainer is None or trainer.fast_dev_run:
            return
        if trainer.max_steps > 0 and trainer.max_epochs not in (None, -1):
            steps = int(trainer.estimated_stepping_batches)
            if steps < trainer.max_steps:
                rank_zero_warning(
                    log,
                    f"trainer.max_steps={trainer.max_steps}: trainer.max_epochs="
                    f"{trainer.max_epochs} ends the run first, after {steps} optimizer "
                    f"step{'s' * (steps != 1)} (the run stops at whichever comes first); set "
                    "trainer.max_epochs=-1 to train for max_steps",
                )

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        groups = self.optimizer_groups()
        optimizer_cfg = hp.optimizer or {"_target_": "torch.optim.AdamW", "fused": True}
        # Partial first: instantiate() would turn the groups' dicts into DictConfigs.
        try:
            optimizer = instantiate(optimizer_cfg, _partial_=True)(groups, lr=hp.lr_head)
        except ValueError as exc:
            # torch's optimizers check their settings' values (betas below 1, Nesterov with a
            # momentum): one line naming the config (was: a traceback)
            name = str(optimizer_cfg.get("_target_")).rpartition(".")[2]
            raise SFTError(f"model.optimizer ({name}): {exc}") from None
        # the settings of each group a restored optimizer's are replaced by: the rate, the
        # decay and what model.optimizer sets (not keys a schedule adds)
        taken = {
            "lr",
            "weight_decay",
            *(str(k) for k in optimizer_cfg if not str(k).startswith("_")),
        }
        self._configured_groups = [
            {k: group[k] for k in sorted(taken) if k in group} for group in optimizer.param_groups
        ]
        self._warn_max_steps_cut_short()
        if hp.scheduler is None:
            if hp.warmup_ratio:  # here, in training (was: no word; at __init__, also in sft-eval)
                rank_zero_warning(
                    log,
                    f"model.warmup_ratio={hp.warmup_ratio}: model.scheduler is null, so there is "
                    "no warm-up (the learning rates stay constant); set model.warmup_ratio=0 if "
                    "that is meant",
                )
            return {"optimizer": optimizer}
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):  # (was: an OverflowError traceback)
            raise SFTError(
                f"model.scheduler ({str(hp.scheduler.get('_target_')).rpartition('.')[2]}) "
                f"follows the run's length in steps, and trainer.max_epochs="
                f"{self.trainer.max_epochs} trainer.max_steps={self.trainer.max_steps} set none: "
                "set trainer.max_steps (or trainer.max_epochs), or model.scheduler=null"
            )
        total = int(total)
        self._schedule_steps = total
        fast_dev_run = bool(self.trainer.fast_dev_run)
        scheduler = create_scheduler(hp.scheduler, optimizer, total, hp.warmup_ratio, fast_dev_run)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
