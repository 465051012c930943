"""A backend-agnostic Keras 3 Vision Transformer laid out like open_clip's `VisionTransformer`.

Every weight has an open_clip counterpart (conv1, class_embedding, positional_embedding, ln_pre,
resblocks.{i}.ln_1/attn/ln_2/mlp, ln_post, proj), so open_clip checkpoints convert one-to-one.
Attention is written as matmul + softmax, which every backend and old TF runtimes execute.
"""

from __future__ import annotations

import contextlib
import math

import keras
from keras import layers, ops

from guie_nb.model.backbones import VitConfig


def quick_gelu_activation(x):
    return x * ops.sigmoid(1.702 * x)


def exact_gelu(x):
    # open_clip uses nn.GELU(): the erf form, not the tanh approximation.
    return keras.activations.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="guie_nb")
class TokenEmbedding(layers.Layer):
    """Prepends the class token and adds the learned positional embedding."""

    def __init__(self, num_patches: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.width = width

    def build(self, input_shape):
        scale = self.width**-0.5
        init = keras.initializers.RandomNormal(stddev=scale)
        self.class_embedding = self.add_weight(shape=(self.width,), initializer=init, name="class_embedding")
        self.positional_embedding = self.add_weight(
            shape=(self.num_patches + 1, self.width), initializer=init, name="positional_embedding"
        )

    def call(self, patches):
        batch = ops.shape(patches)[0]
        cls = ops.cast(self.class_embedding, patches.dtype)
        cls = ops.broadcast_to(ops.reshape(cls, (1, 1, self.width)), (batch, 1, self.width))
        tokens = ops.concatenate([cls, patches], axis=1)
        return tokens + ops.cast(self.positional_embedding, patches.dtype)[None]

    def get_config(self):
        return {**super().get_config(), "num_patches": self.num_patches, "width": self.width}


@keras.saving.register_keras_serializable(package="guie_nb")
class SelfAttention(layers.Layer):
    """Multi-head self-attention with open_clip's fused in_proj and out_proj."""

    def __init__(self, width: int, heads: int, **kwargs):
        super().__init__(**kwargs)
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.width, self.heads = width, heads
        self.in_proj = layers.Dense(3 * width, name="in_proj")
        self.out_proj = layers.Dense(width, name="out_proj")

    def build(self, input_shape):
        self.in_proj.build(input_shape)
        self.out_proj.build(input_shape)

    def call(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        head_dim = self.width // self.heads
        qkv = ops.reshape(self.in_proj(x), (batch, length, 3, self.heads, head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # [3, B, heads, L, head_dim]
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = ops.matmul(q * (1.0 / math.sqrt(head_dim)), ops.transpose(k, (0, 1, 3, 2)))
        weights = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        out = ops.matmul(ops.cast(weights, v.dtype), v)  # [B, heads, L, head_dim]
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (batch, length, self.width))
        return self.out_proj(out)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads}


@keras.saving.register_keras_serializable(package="guie_nb")
class ResidualAttentionBlock(layers.Layer):
    def __init__(self, width: int, heads: int, mlp_width: int, quick_gelu: bool = False,
                 layer_norm_eps: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads, self.mlp_width = width, heads, mlp_width
        self.quick_gelu, self.layer_norm_eps = quick_gelu, layer_norm_eps
        self.ln_1 = layers.LayerNormalization(epsilon=layer_norm_eps, name="ln_1")
        self.attn = SelfAttention(width, heads, name="attn")
        self.ln_2 = layers.LayerNormalization(epsilon=layer_norm_eps, name="ln_2")
        self.c_fc = layers.Dense(mlp_width, name="c_fc")
        self.c_proj = layers.Dense(width, name="c_proj")
        self._act = quick_gelu_activation if quick_gelu else exact_gelu

    def build(self, input_shape):
        for layer in (self.ln_1, self.attn, self.ln_2, self.c_fc):
            layer.build(input_shape)
        self.c_proj.build(tuple(input_shape[:-1]) + (self.mlp_width,))

    def call(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(self._act(self.c_fc(self.ln_2(x))))

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "heads": self.heads,
            "mlp_width": self.mlp_width,
            "quick_gelu": self.quick_gelu,
            "layer_norm_eps": self.layer_norm_eps,
        }


def _block_remat_scope(block_name: str, remat: bool):
    """Keras' own remat switch for one block (a layer reads the scope when it is constructed).

    Keras calls `keras.remat(block.call)` each time the block runs, which on JAX is
    `jax.checkpoint` with its default policy: nothing inside the block is saved, only its input.
    That is the policy wanted here: `dots_with_no_batch_dims_saveable` would keep the outputs of
    in_proj / out_proj / c_fc / c_proj (9 values per token and channel: 18 of the 34 bytes of
    Korthikanti et al.'s count), half of what remat is meant to drop. Only the named block is
    rematerialised, not its sublayers, so the recomputation happens once per block.
    """
    if not remat:
        return contextlib.nullcontext()
    return keras.RematScope(mode="list_of_layers", layer_names=[block_name])


def build_vit(cfg: VitConfig, name: str = "visual", remat: bool = False) -> keras.Model:
    """The visual tower: normalised float images `[B, S, S, 3]` -> features `[B, cfg.feature_dim]`.

    `remat=True` rematerialises each residual block: its forward is recomputed during the backward
    pass, so a block keeps only its input `[B, L, width]` between the passes (activation
    checkpointing, ~1/3 more FLOPs per step). Weights, variable paths and outputs are unchanged.
    `cfg.patch_stride` below the patch size makes the patch conv overlap (open_clip's `conv1` with
    another `stride`); the positional embedding then has `cfg.num_tokens` rows.
    Raises ValueError when the patches do not tile the image (`VitConfig.check_geometry`).
    """
    size = cfg.image_size
    cfg.check_geometry()
    images = keras.Input((size, size, 3), name="pixels")
    # patch_stride < patch_size: overlapping patches, more tokens (`cfg.num_tokens`), same weights
    x = layers.Conv2D(cfg.width, cfg.patch_size, strides=cfg.stride, use_bias=False, name="conv1")(images)
    x = layers.Reshape((cfg.grid_size * cfg.grid_size, cfg.width), name="patches")(x)
    x = TokenEmbedding(cfg.grid_size * cfg.grid_size, cfg.width, name="embeddings")(x)
    x = layers.LayerNormalization(epsilon=cfg.layer_norm_eps, name="ln_pre")(x)
    for i in range(cfg.layers):
        with _block_remat_scope(f"resblocks_{i}", remat):
            block = ResidualAttentionBlock(
                cfg.width, cfg.heads, cfg.mlp_width, cfg.quick_gelu, cfg.layer_norm_eps, name=f"resblocks_{i}"
            )
        x = block(x)
    x = layers.LayerNormalization(epsilon=cfg.layer_norm_eps, name="ln_post")(x[:, 0])
    if cfg.output_dim:
        x = layers.Dense(cfg.output_dim, use_bias=False, name="proj")(x)
    return keras.Model(images, x, name=name)
