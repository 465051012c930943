"""TorchScript export that PyTorch 1.11 (the scorer) loads: `saved_model.pt`.

Input uint8 `[1, 3, H, W]` at the image's native size; output float32 `[1, D]`, L2-normalised
(the scorer takes `model(x)[0]`). Today's torch writes files torch 1.11 rejects when they use
`nn.GELU` (file format 10), `nn.MultiheadAttention` or `F.interpolate`, so this module is written
with direct builtins only: matmul + softmax attention, erf GELU, `torch.layer_norm`, and the
resize as banded matmuls (rows, then columns) with weights computed exactly like TensorFlow's
antialiased bicubic `tf.image.resize` (the Keras model's own pre-processing), so both formats see
the same pixels.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from guie_nb.model.backbones import VitConfig
from guie_nb.model.embedding import SIZE_FEATURES, SIZE_REFERENCE_PX, ModelConfig
from guie_nb.model.preprocessing import CLIP_MEAN, CLIP_STD, center_crop_offset, torchvision_resize_size
from guie_nb.model.tower_input import normalised_pixel_range


def _keys_cubic(x: Tensor) -> Tensor:
    # TensorFlow's KeysCubicKernel (a = -0.5), radius 2
    x = torch.abs(x)
    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _resize_weights(in_size: int, out_size: int) -> Tensor:
    """`[out, in]` weights of TF's scale_and_translate (keyscubic, antialias, no translation)."""
    scale = torch.tensor(float(out_size)) / torch.tensor(float(in_size))
    inv_scale = 1.0 / scale
    kernel_scale = torch.clamp(inv_scale, min=1.0)  # widen the kernel when shrinking
    sample = (torch.arange(out_size, dtype=torch.float32) + 0.5) * inv_scale
    source = torch.arange(in_size, dtype=torch.float32) + 0.5
    weights = _keys_cubic((source[None, :] - sample[:, None]) / kernel_scale)
    total = weights.sum(dim=1, keepdim=True)
    return weights / torch.where(torch.abs(total) > 1e-30, total, torch.ones_like(total))


def _resize_rows(x: Tensor, weights: Tensor, first: int, in_size: int, out_size: int, block: int = 16) -> Tensor:
    """float `[B, C, in_size, W]` -> `[B, C, n, W]`: output rows `first .. first + n` (n = weights'
    rows) of an `in_size -> out_size` resize along dim 2. `weights` are those rows of the dense
    `_resize_weights`; each `block` of output rows multiplies only the band of input rows inside
    its kernels' support (radius 2 * max(in/out, 1) input pixels): the dense matmul's sum without
    its zeros, ~1/5 of its cost for a 1200 px side (16 rows measured fastest in torch 1.11 CPU)."""
    inv_scale = float(in_size) / float(out_size)
    reach = 2.0 * max(inv_scale, 1.0) + 1.0  # kernel radius, plus a pixel against rounding
    n = weights.shape[0]
    # written into one tensor: torch 1.11 runs a list-append + cat loop of this shape as an empty list
    out = torch.empty([x.shape[0], x.shape[1], n, x.shape[3]], dtype=x.dtype, device=x.device)
    for b0 in range(0, n, block):
        b1 = min(b0 + block, n)
        lo = max(int(math.floor((first + b0 + 0.5) * inv_scale - reach)), 0)
        hi = min(int(math.ceil((first + b1 - 0.5) * inv_scale + reach)), in_size)
        out[:, :, b0:b1] = torch.matmul(weights[b0:b1, lo:hi], x[:, :, lo:hi])
    return out


def _resize(x: Tensor, new_h: int, new_w: int, top: int, left: int, size_h: int, size_w: int) -> Tensor:
    """float `[B, C, H, W]` resized to `new_h x new_w`, of which only the `size_h x size_w` window
    at (`top`, `left`) is computed (a centre crop costs nothing extra): rows, then columns."""
    in_h, in_w = x.shape[2], x.shape[3]
    wh = _resize_weights(in_h, new_h)[top:top + size_h].to(x.device)
    ww = _resize_weights(in_w, new_w)[left:left + size_w].to(x.device)
    x = _resize_rows(x, wh, top, in_h, new_h)
    return _resize_rows(x.transpose(2, 3), ww, left, in_w, new_w).transpose(2, 3)


class Preprocess(nn.Module):
    """uint8 `[B, 3, H, W]` -> CLIP-normalised float `[B, 3, S, S]`, as `resize_images` + Keras."""

    def __init__(self, size: int, resize_mode: str):
        super().__init__()
        self.size = size
        self.crop = resize_mode == "shortest_side_crop"
        self.register_buffer("mean", torch.tensor([255.0 * m for m in CLIP_MEAN]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([255.0 * s for s in CLIP_STD]).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        x = images.to(torch.float32)
        size = self.size
        if self.crop:
            # the same integer arithmetic as the SavedModel's resize_images (torchvision's sizes)
            new_h, new_w = torchvision_resize_size(x.shape[2], x.shape[3], size)
            top, left = center_crop_offset(new_h, size), center_crop_offset(new_w, size)
            x = _resize(x, new_h, new_w, top, left, size, size)
        else:
            x = _resize(x, size, size, 0, 0, size, size)
        x = torch.clamp(x, 0.0, 255.0)
        return (x - self.mean) / self.std


def _l2_normalize(x: Tensor) -> Tensor:
    return x / torch.clamp(torch.norm(x, 2, 1, True), min=1e-12)


class Linear(nn.Module):
    """`x @ weight + bias` with a Keras-layout `[in, out]` weight (plain matmul: any torch reads it)."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = torch.matmul(x, self.weight)
        bias = self.bias
        if bias is not None:
            y = y + bias
        return y


class LayerNorm(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.width, self.eps = width, eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: Tensor) -> Tensor:
        return torch.layer_norm(x, [self.width], self.weight, self.bias, self.eps)


class Block(nn.Module):
    """open_clip's ResidualAttentionBlock, written with matmul + softmax and erf GELU."""

    def __init__(self, width: int, heads: int, mlp_width: int, quick_gelu: bool, eps: float):
        super().__init__()
        self.heads, self.head_dim, self.quick_gelu = heads, width // heads, quick_gelu
        self.ln_1, self.ln_2 = LayerNorm(width, eps), LayerNorm(width, eps)
        self.in_proj, self.out_proj = Linear(width, 3 * width), Linear(width, width)
        self.c_fc, self.c_proj = Linear(width, mlp_width), Linear(mlp_width, width)

    def attention(self, x: Tensor) -> Tensor:
        b, n, w = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.in_proj(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q * (1.0 / math.sqrt(self.head_dim)), k.transpose(-2, -1))
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out_proj(out.permute(0, 2, 1, 3).reshape(b, n, w))

    def mlp(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)
        if self.quick_gelu:
            h = h * torch.sigmoid(1.702 * h)
        else:
            h = 0.5 * h * (1.0 + torch.erf(h * 0.7071067811865476))
        return self.c_proj(h)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Neck(nn.Module):
    """One neck branch: `[hidden ->] projection` as Linears (dropout is off at inference)."""

    def __init__(self, dims: list[int]):
        super().__init__()
        self.layers = nn.ModuleList([Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def size_features(height: float, width: float, batch: int, log_reference: float) -> Tensor:
    """`guie_nb.model.embedding.size_features` of a raw `height x width` image, float32 `[batch, 3]`;
    `log_reference`: `ln(SIZE_REFERENCE_PX)` (TorchScript takes no float globals)."""
    sides = torch.log(torch.clamp(torch.tensor([height, width], dtype=torch.float32), min=1.0))
    feats = torch.stack([sides[0] - log_reference, sides[1] - log_reference, sides[1] - sides[0]])
    return feats.view(1, 3).expand(batch, 3)


class Tower(nn.Module):
    """open_clip's VisionTransformer: normalised float `[B, 3, S, S]` -> features `[B, feature_dim]`
    (state-dict names as open_clip's, Linear weights `[in, out]`); the patch conv at `v.stride`."""

    def __init__(self, v: VitConfig):
        super().__init__()
        self.patch, self.stride, self.width = v.patch_size, v.stride, v.width
        self.conv1 = nn.Parameter(torch.zeros(v.width, 3, v.patch_size, v.patch_size))
        self.class_embedding = nn.Parameter(torch.zeros(v.width))
        self.positional_embedding = nn.Parameter(torch.zeros(v.num_tokens, v.width))
        self.ln_pre, self.ln_post = LayerNorm(v.width, v.layer_norm_eps), LayerNorm(v.width, v.layer_norm_eps)
        self.blocks = nn.ModuleList([Block(v.width, v.heads, v.mlp_width, v.quick_gelu, v.layer_norm_eps)
                                     for _ in range(v.layers)])
        self.proj = Linear(v.width, v.output_dim, bias=False) if v.output_dim else None

    def features(self, x: Tensor) -> Tensor:
        x = torch.conv2d(x, self.conv1, None, [self.stride, self.stride])
        x = x.flatten(2).transpose(1, 2)  # [B, grid*grid, width], row-major like Keras' Reshape
        cls = self.class_embedding.view(1, 1, self.width).expand(x.shape[0], 1, self.width)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.ln_pre(x)
        for block in self.blocks:
            x = block(x)
        x = self.ln_post(x[:, 0])
        proj = self.proj
        if proj is not None:
            x = proj(x)
        return x


class ExtraTower(Tower):
    """A concatenated backbone (`cfg.extra_backbones`): the model's normalised `[B, 3, S, S]` resized
    to the tower's own size first when it has one, `clip(R x R^T, lo, hi)` with R from
    `_resize_weights(S, T)` (TF's antialiased bicubic) and lo / hi = pixels 0 and 255 normalised, as
    the Keras layer `guie_nb.model.tower_input.TowerResize`; then the ViT."""

    def __init__(self, v: VitConfig, in_size: int):
        super().__init__(v)
        self.resize = v.image_size != in_size
        self.register_buffer("rows", _resize_weights(in_size, v.image_size) if self.resize else torch.zeros(0))
        lo, hi = normalised_pixel_range()
        self.register_buffer("lo", torch.from_numpy(lo).view(1, 3, 1, 1))
        self.register_buffer("hi", torch.from_numpy(hi).view(1, 3, 1, 1))

    def tower_features(self, x: Tensor) -> Tensor:
        if self.resize:
            x = torch.matmul(torch.matmul(self.rows, x), self.rows.t())
            x = torch.maximum(torch.minimum(x, self.hi), self.lo)
        return self.features(x)


class EmbeddingModule(Tower):
    """uint8 `[B, 3, H, W]` -> L2-normalised float32 `[B, D]`: the Keras embedding model in torch.

    The patch conv runs at `cfg.vit.stride` (overlapping patches below the patch size); the extra
    backbones (`cfg.extra_backbones`, weights under `extra.{j}.`) run on the same pixels (resized to
    a tower's own `image_size` when it has one: `ExtraTower`), their
    features concatenated after the main backbone's (top-level weights) as Keras' `backbone_concat`;
    the neck is `cfg.neck_branches` averaged branches; with `cfg.size_features` the raw input's H and
    W become `[ln(h/500), ln(w/500), ln(w/h)]` joined to the backbone feature; flip TTA
    (`cfg.flip_tta`, or the export-time `flip_tta`) averages the image's and its mirror's unit embeddings."""

    def __init__(self, cfg: ModelConfig, flip_tta: bool = False):
        super().__init__(cfg.vit)
        v = cfg.vit
        self.flip_tta = flip_tta or cfg.flip_tta
        self.with_size, self.log_size_reference = cfg.size_features, math.log(SIZE_REFERENCE_PX)
        self.preprocess = Preprocess(v.image_size, cfg.resize_mode)
        self.extra = nn.ModuleList([ExtraTower(e, v.image_size) for e in cfg.extra_vits])
        n_in = cfg.feature_dim + (SIZE_FEATURES if cfg.size_features else 0)
        dims = [n_in] + ([cfg.hidden_dim] if cfg.hidden_dim else []) + [cfg.embedding_dim]
        self.branches = nn.ModuleList([Neck(dims) for _ in range(cfg.neck_branches)])

    def embed(self, x: Tensor, sizes: Tensor) -> Tensor:
        feats = [self.features(x)]
        for tower in self.extra:
            feats.append(tower.tower_features(x))
        x = torch.cat(feats, dim=1)
        if self.with_size:
            x = torch.cat([x, sizes], dim=1)
        # the mean of the branches, summed in order then divided, as Keras' Average layer does
        total = torch.zeros(0)  # TorchScript wants the variable typed before the loop
        n = 0
        for branch in self.branches:
            y = branch(x)
            total = y if n == 0 else total + y
            n += 1
        return _l2_normalize(total / float(n))

    def forward(self, images: Tensor) -> Tensor:
        sizes = size_features(float(images.shape[2]), float(images.shape[3]), images.shape[0],
                              self.log_size_reference)
        x = self.preprocess(images)
        emb = self.embed(x, sizes)
        if self.flip_tta:  # as the SavedModel: sum of the two unit embeddings, normalised again
            emb = _l2_normalize(emb + self.embed(torch.flip(x, [3]), sizes))
        return emb


# open_clip key (after `transformer.resblocks.{i}.`) -> this module's key (after `blocks.{i}.`)
_BLOCK_KEYS = {"ln_1.weight": "ln_1.weight", "ln_1.bias": "ln_1.bias", "ln_2.weight": "ln_2.weight",
               "ln_2.bias": "ln_2.bias", "attn.in_proj_weight": "in_proj.weight", "attn.in_proj_bias": "in_proj.bias",
               "attn.out_proj.weight": "out_proj.weight", "attn.out_proj.bias": "out_proj.bias",
               "mlp.c_fc.weight": "c_fc.weight", "mlp.c_fc.bias": "c_fc.bias",
               "mlp.c_proj.weight": "c_proj.weight", "mlp.c_proj.bias": "c_proj.bias"}
_TOP_KEYS = {"conv1.weight": "conv1", "class_embedding": "class_embedding",
             "positional_embedding": "positional_embedding", "ln_pre.weight": "ln_pre.weight",
             "ln_pre.bias": "ln_pre.bias", "ln_post.weight": "ln_post.weight", "ln_post.bias": "ln_post.bias",
             "proj": "proj.weight"}


def open_clip_to_module_state(visual: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An open_clip ViT state dict (torch layouts) under this module's names and `[in, out]` Linears."""
    out = {}
    for key, value in visual.items():
        m = re.match(r"transformer\.resblocks\.(\d+)\.(.+)$", key)
        if m and m.group(2) in _BLOCK_KEYS:
            name = f"blocks.{m.group(1)}.{_BLOCK_KEYS[m.group(2)]}"
            out[name] = value.T if value.ndim == 2 else value  # torch Linear [out, in] -> [in, out]
        elif key in _TOP_KEYS:
            out[_TOP_KEYS[key]] = value  # open_clip's proj is already [in, out]
        else:
            raise ValueError(f"open_clip weight {key!r} has no place in the exported ViT")
    return out


def _keras_weights(embedding_model) -> dict[str, np.ndarray]:
    """The Keras embedding model's weights under this module's state-dict names: the backbone
    through issue-3's open_clip converter, each neck branch's Dense layers (`[in, out]`) as they are."""
    import keras

    from guie_nb.model.convert import keras_to_open_clip_state_dict

    out = open_clip_to_module_state(keras_to_open_clip_state_dict(embedding_model))
    extras = sorted((layer.name for layer in embedding_model.layers if re.fullmatch(r"visual_\d+", layer.name)),
                    key=lambda n: int(n.split("_")[1]))
    for j, name in enumerate(extras):  # visual_1, visual_2, ... -> extra.0., extra.1., ...
        tower = open_clip_to_module_state(keras_to_open_clip_state_dict(embedding_model.get_layer(name)))
        out.update({f"extra.{j}.{k}": v for k, v in tower.items()})
    names = {layer.name for layer in embedding_model.layers}
    suffixes = [""] if "projection" in names else sorted(
        (n[len("projection"):] for n in names if re.fullmatch(r"projection_\d+", n)), key=lambda x: int(x[1:]))
    for i, suffix in enumerate(suffixes):  # neck branch i: `hidden{suffix}` (if any), `projection{suffix}`
        dense_layers = [n + suffix for n in ("hidden", "projection") if n + suffix in names]
        for j, name in enumerate(dense_layers):
            dense = embedding_model.get_layer(name)
            out[f"branches.{i}.layers.{j}.weight"] = np.asarray(keras.ops.convert_to_numpy(dense.kernel), np.float32)
            out[f"branches.{i}.layers.{j}.bias"] = np.asarray(keras.ops.convert_to_numpy(dense.bias), np.float32)
        if "neck_bn" in names:  # the BatchNorm before the branches, folded into each branch's first Dense
            w, b = f"branches.{i}.layers.0.weight", f"branches.{i}.layers.0.bias"
            out[w], out[b] = _fold_batchnorm(embedding_model.get_layer("neck_bn"), out[w], out[b])
    return out


def _fold_batchnorm(bn, kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNorm followed by a Dense `[in, out]` as one Dense: BN(x) = a * x + c with
    a = gamma / sqrt(moving_var + eps), c = beta - moving_mean * a; so BN(x) @ W + b =
    x @ (a[:, None] * W) + (c @ W + b). (The dropout between them is the identity at inference.)"""
    import keras

    def np_(v):
        return np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)

    a = np_(bn.gamma) / np.sqrt(np_(bn.moving_variance) + bn.epsilon)
    c = np_(bn.beta) - np_(bn.moving_mean) * a
    return (a[:, None] * kernel).astype(np.float32), (c @ kernel + bias).astype(np.float32)


def build_torch_module(embedding_model, cfg: ModelConfig, flip_tta: bool = False) -> EmbeddingModule:
    """A torch copy of the Keras embedding model (weights copied, shapes checked)."""
    module = EmbeddingModule(cfg, flip_tta).eval()
    weights = _keras_weights(embedding_model)
    state = module.state_dict()
    buffers = {name for name, _ in module.named_buffers()}  # constants of the module, not Keras weights
    missing = sorted(k for k in state if k not in weights and k not in buffers)
    unexpected = sorted(set(weights) - set(state))
    if missing or unexpected:
        raise ValueError(f"Keras model does not match the torch layout: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for k, w in weights.items():
        if tuple(state[k].shape) != w.shape:
            raise ValueError(f"{k}: Keras weight {w.shape} vs torch {tuple(state[k].shape)}")
        state[k] = torch.from_numpy(np.ascontiguousarray(w))
    module.load_state_dict(state)
    return module


def save_torchscript(module: nn.Module, path: str | Path) -> Path:
    """Script and save `module`, then drop the `*.debug_pkl` records: with them, a load error in
    torch 1.11 aborts the process instead of raising, which hides the real message."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # torch names the archive's top folder after the file, so the temporary file keeps the name
    tmp_dir = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp_dir.mkdir(exist_ok=True)
    tmp = tmp_dir / path.name
    try:
        torch.jit.save(torch.jit.script(module.eval()), str(tmp))
        strip_debug_records(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def strip_debug_records(path: Path) -> None:
    """Rewrite a TorchScript archive without its `*.debug_pkl` records, with torch's own writer
    (aligned records, zip64 for files over 2 GiB, the original file-format version)."""
    reader = torch._C.PyTorchFileReader(str(path))
    names = reader.get_all_records()
    version = int(reader.get_record(".data/version").decode() if ".data/version" in names
                  else reader.get_record("version").decode())
    stripped = path.with_name(path.name + ".nodebug")
    stripped.mkdir()
    out = stripped / path.name  # the archive's top folder is named after the file
    writer = torch._C.PyTorchFileWriter(str(out))
    writer.set_min_version(version)
    for name in names:
        if name.endswith(".debug_pkl") or name in (".data/version", "version", "byteorder"):
            continue
        data = reader.get_record(name)
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    del reader, writer
    os.replace(out, path)
    stripped.rmdir()


def export_torchscript(embedding_model, cfg: ModelConfig, path: str | Path, flip_tta: bool = False) -> Path:
    """Write `saved_model.pt` for the Keras embedding model (any Keras backend)."""
    with torch.no_grad():
        return save_torchscript(build_torch_module(embedding_model, cfg, flip_tta), path)
