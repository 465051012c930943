"""Analytic FLOPs per image of the embedding model and its margin head, forward and backward.

Convention: one multiply-add is 2 FLOPs, and only matrix products are counted (the patch
embedding convolution, the attention in/out projections, the attention score and value products,
the MLP, the CLIP projection, the neck and the margin head). Layer norms, softmax, GELU, dropout,
the loss and the optimizer update are left out: they are a few FLOPs per value, not per weight, and
do not run on the matrix units. This is the count behind *model FLOPs utilisation* (MFU) in
Chowdhery et al. 2022, "PaLM", appendix B (6N FLOPs per token for the weights, after Kaplan et al.
2020, "Scaling Laws for Neural Language Models", section 2.1, plus 12·L·H·Q·T for attention), here
counted per operation so that frozen parts and non-square shapes come out exactly:

- forward: a product of an `[m, k]` and a `[k, n]` operand costs `2·m·k·n`;
- backward: the gradient of each operand that depends on a trained parameter costs as much as the
  forward product (Kaplan's 2x forward when both do). A weight's operand depends on it when the
  weight trains; an activation depends on a trained parameter when anything upstream of it trains,
  a layer norm's scale included. So frozen leading blocks cost no backward at all (nor does the
  patch embedding's input, the pixels), and a frozen head still passes gradients to the neck;
- rematerialisation (`TrainConfig.remat`) recomputes, in the backward pass, the forward of each
  block that has one, less its last product (`c_proj`, whose output the backward does not read;
  XLA drops it as dead code). PaLM's MFU leaves recomputation out (its "hardware FLOPs" include
  it): `FlopCount.model` and `FlopCount.hardware` give both. Not modelled: with remat above frozen
  blocks, XLA (CPU) was seen to run the first trained block's `in_proj` once instead of twice
  (2% of a demo-size step).

XLA's cost analysis of a compiled step counts the same products the same way (2 FLOPs per
multiply-add) and also every elementwise operation and reduction, one FLOP per value.
`tests/test_flops.py` checks XLA's dots and convolutions (`hlo_matmul_flops`) against this count
exactly, its whole count within the share the elementwise work takes, and the forward against
open_clip's published profile (`docs/model_profile.csv`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FlopCount:
    """FLOPs per image of one training step (or of inference, with `backward` = `remat` = 0)."""

    forward: float
    backward: float
    remat: float  # forward recomputed in the backward pass (0 without TrainConfig.remat)
    parts: dict[str, float] = field(default_factory=dict)  # forward FLOPs by part: stem, blocks, top, neck, head

    @property
    def model(self) -> float:
        """Forward + backward: the numerator of MFU (PaLM, appendix B)."""
        return self.forward + self.backward

    @property
    def hardware(self) -> float:
        """Forward + backward + recomputation: what the device executes (hardware FLOPs utilisation)."""
        return self.model + self.remat


def patch_grid(image_size: int, patch_size: int, patch_stride: int | None = None) -> int:
    """Patches per side: `(image_size - patch_size) // stride + 1`, stride = `patch_size` when None.

    Raises ValueError when a patch does not fit or the stride is not positive.
    """
    stride = patch_size if patch_stride is None else patch_stride
    if stride < 1 or patch_size < 1 or image_size < patch_size:
        raise ValueError(f"no patch grid for image_size {image_size}, patch_size {patch_size}, stride {stride}")
    return (image_size - patch_size) // stride + 1


def num_tokens(model_cfg) -> int:
    """Sequence length of the main ViT: the patches plus the class token.

    `model_cfg`: a `guie_nb.model.embedding.ModelConfig`; its `vit` carries `patch_stride` (a
    stride below the patch size overlaps the patches: the 1st place's 290 px stage, patch 14 at
    stride 12, has 24 x 24 patches + 1 = 577 tokens, 2.24x the 257 of 224 px).
    Raises ValueError when a patch does not fit (`patch_grid`).
    """
    return tower_tokens(model_cfg.vit)


def tower_tokens(vit) -> int:
    """Sequence length through one ViT tower (a `VitConfig`): `patch_grid(...) ** 2 + 1`."""
    return patch_grid(vit.image_size, vit.patch_size, vit.patch_stride) ** 2 + 1


class _Counter:
    """Walks the model's matrix products in forward order, tracking whether the activation stream
    depends on a trained parameter (so needs a gradient)."""

    def __init__(self):
        self.forward = self.backward = 0.0
        self.parts: dict[str, float] = {}
        self.varies = False  # the pixels never need a gradient

    def weight_product(self, part: str, flops: float, trained: bool) -> None:
        """activation x weight; the output varies if either operand does."""
        self._add(part, flops, flops * (int(self.varies) + int(trained)))
        self.varies = self.varies or trained

    def elementwise_parameters(self, trained: bool) -> None:
        """A layer norm's scale and shift (or a bias): no product, but the stream depends on them."""
        self.varies = self.varies or trained

    def activation_product(self, part: str, flops: float) -> None:
        """activation x activation (attention scores and values): both operands vary together."""
        self._add(part, flops, 2 * flops if self.varies else 0.0)

    def _add(self, part: str, forward: float, backward: float) -> None:
        self.forward += forward
        self.backward += backward
        self.parts[part] = self.parts.get(part, 0.0) + forward


def _block_products(tokens: int, width: int, mlp_width: int) -> list[tuple[str, float, bool]]:
    """(name, forward FLOPs per image, has a weight operand) of one residual attention block."""
    lw = tokens * width
    return [
        ("in_proj", 2 * lw * 3 * width, True),
        ("scores", 2 * tokens * tokens * width, False),  # all heads: heads x L x L x head_dim
        ("values", 2 * tokens * tokens * width, False),
        ("out_proj", 2 * lw * width, True),
        ("c_fc", 2 * lw * mlp_width, True),
        ("c_proj", 2 * tokens * mlp_width * width, True),
    ]


def _tower(c: _Counter, vit, freeze_backbone: bool, frozen_blocks: int, remat: bool) -> float:
    """Count one ViT tower's products (stem, blocks, CLIP projection) into `c`; returns the FLOPs
    that remat recomputes in it."""
    tokens, width = tower_tokens(vit), vit.width
    c.weight_product("stem", 2 * (tokens - 1) * 3 * vit.patch_size**2 * width,
                     trained=not (freeze_backbone or frozen_blocks > 0))
    remat_flops = 0.0
    for i in range(vit.layers):
        trained = not (freeze_backbone or i < frozen_blocks)
        products = _block_products(tokens, width, vit.mlp_width)
        c.elementwise_parameters(trained)  # ln_1 comes before in_proj
        for _, flops, has_weight in products:
            if has_weight:
                c.weight_product("blocks", flops, trained)
            else:
                c.activation_product("blocks", flops)
        if remat and c.varies:  # only a block the backward pass goes through is recomputed
            remat_flops += sum(flops for name, flops, _ in products if name != "c_proj")
    c.elementwise_parameters(not freeze_backbone)  # ln_post
    if vit.output_dim:  # the CLIP projection, on the class token only
        c.weight_product("top", 2 * width * vit.output_dim, trained=not freeze_backbone)
    return remat_flops


def flops_per_image(model_cfg, num_classes: int | None = None, *, freeze_backbone: bool = False,
                    frozen_blocks: int = 0, freeze_head: bool = False, remat: bool = False,
                    backward: bool = True) -> FlopCount:
    """Analytic FLOPs per image of the embedding model (+ the margin head over `num_classes`).

    `model_cfg`: a `ModelConfig` (its ViT with `patch_stride`, `extra_vits`, `feature_dim`,
    `hidden_dim`, `embedding_dim`, `neck_branches`, `head.subcenters`). Every tower (the main ViT
    and each of `extra_backbones`, concatenated before the neck) runs on every image; the freezing
    arguments mean what the `TrainConfig` fields of the same names mean
    (`guie_nb.training.param_groups`, applied to each tower alike): the stem and the first
    `frozen_blocks` blocks, the whole backbone, or the head stay fixed; the neck always trains.
    `backward=False` counts inference only (`backward` and `remat` are then 0): the scorer's cost
    per image (`guie_nb.preflight.scoring_estimate`).
    `neck_branches` = n parallel projections into the embedding, averaged: n times the projection.
    Raises ValueError for a negative `frozen_blocks` or fewer than 2 classes.
    """
    if frozen_blocks < 0:
        raise ValueError(f"frozen_blocks must be >= 0, got {frozen_blocks}")
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"a margin head needs at least 2 classes, got {num_classes}")
    c = _Counter()
    remat_flops = 0.0
    varies = False
    for vit in [model_cfg.vit, *model_cfg.extra_vits]:
        c.varies = False  # each tower starts from the pixels
        remat_flops += _tower(c, vit, freeze_backbone, frozen_blocks, remat)
        varies = varies or c.varies
    c.varies = varies  # the concatenated features need a gradient if any tower's do
    features = model_cfg.feature_dim
    if model_cfg.hidden_dim:
        c.weight_product("neck", 2 * features * model_cfg.hidden_dim, trained=True)
        features = model_cfg.hidden_dim
    c.weight_product("neck", model_cfg.neck_branches * 2 * features * model_cfg.embedding_dim, trained=True)
    if num_classes is not None:
        centers = num_classes * model_cfg.head.subcenters
        c.weight_product("head", 2 * model_cfg.embedding_dim * centers, trained=not freeze_head)
    if not backward:
        return FlopCount(c.forward, 0.0, 0.0, c.parts)
    return FlopCount(c.forward, c.backward, remat_flops, c.parts)


def train_flops_per_image(model_cfg, train_cfg, num_classes: int | None) -> FlopCount:
    """`flops_per_image` of one training step as `train_cfg` (a `TrainConfig`) sets it up
    (`num_classes` None: without the margin head)."""
    return flops_per_image(model_cfg, num_classes, freeze_backbone=train_cfg.freeze_backbone,
                           frozen_blocks=train_cfg.frozen_blocks, freeze_head=train_cfg.freeze_head,
                           remat=train_cfg.remat)


_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%(?P<name>[\w.\-]+)\s*=\s*(?P<shape>\w+\[[\d,]*\])(?:\{[^}]*\})?\s+"
                          r"(?P<op>[\w\-]+)\((?P<operands>[^)]*)\)(?P<attrs>.*)$")


def _dims(shape: str) -> list[int]:
    inside = shape[shape.index("[") + 1:-1]
    return [int(d) for d in inside.split(",") if d]


def _product(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def hlo_matmul_flops(hlo_text: str) -> float:
    """FLOPs of the `dot` and `convolution` instructions of an HLO module, 2 per multiply-add.

    `hlo_text`: `jax.stages.Compiled.as_text()`. Counts each instruction once (a loop body once,
    as XLA's cost analysis does), so give it an unscanned step. A dot costs
    `2 x output elements x contracted elements`; a convolution `2 x output elements x kernel
    elements / output features` (unpadded windows). This is XLA's own graph, after its
    optimisations (dead products, such as a recomputed block's last one, are gone), restricted to
    the products `flops_per_image` counts. Raises ValueError when an operand's shape is not found.
    """
    shapes: dict[str, list[int]] = {}
    products = []
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        shapes[m["name"]] = _dims(m["shape"])
        if m["op"] in ("dot", "convolution"):
            products.append(m)
    total = 0.0
    for m in products:
        operands = [o.strip().lstrip("%") for o in m["operands"].split(",")]
        missing = [o for o in operands[:2] if o not in shapes]
        if missing:
            raise ValueError(f"HLO operand(s) {missing} of {m['name']} have no shape in the module text")
        lhs, rhs, out = shapes[operands[0]], shapes[operands[1]], _dims(m["shape"])
        if m["op"] == "dot":
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", m["attrs"])
            axes = [int(a) for a in contracting[1].split(",") if a] if contracting else []
            total += 2 * _product(out) * _product(lhs[a] for a in axes)
        else:
            labels = re.search(r"dim_labels=\w+_(\w+)->", m["attrs"])
            if not labels:
                raise ValueError(f"convolution {m['name']} has no dim_labels")
            out_features = rhs[labels[1].index("o")]
            total += 2 * _product(out) * _product(rhs) / out_features
    return total


# Peak dense bf16 FLOP/s per JAX device, by `jax.Device.device_kind` (matched as a prefix, first
# match wins). Sources: Google Cloud TPU docs (cloud.google.com/tpu/docs/v5e, /v4, /v5p, /v6e,
# /system-architecture-tpu-vm: v3 is 123 TFLOP/s per chip of 2 cores, one JAX device per core);
# NVIDIA datasheets, dense (without 2:4 sparsity): H100 SXM / H200 989 TFLOP/s, H100 PCIe 756,
# A100 312, L4 121. CPUs have no entry: their peak depends on the core count, clock and vector
# units in use, so the benchmarks measure a matmul ceiling instead and say so.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v6 lite", 918e12),  # v6e (Trillium)
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),  # v5p reports itself as "TPU v5"
    ("TPU v4", 275e12),
    ("TPU v3", 61.5e12),  # per core
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100", 989e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100", 312e12),
    ("NVIDIA L4", 121e12),
)


def peak_bf16_flops(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of one device of this kind, or None when the table does not know it
    (CPUs, unlisted accelerators)."""
    for prefix, peak in PEAK_BF16_FLOPS:
        if device_kind.startswith(prefix):
            return peak
    return None
