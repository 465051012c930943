"""Backbone configurations: one place decides which ViT is built (open_clip's names)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class VitConfig:
    """An open_clip `VisionTransformer` shape. Field names follow open_clip's `CLIPVisionCfg`."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    output_dim: int | None = 512  # the CLIP projection; None keeps the raw width (2nd place)
    quick_gelu: bool = False
    layer_norm_eps: float = 1e-5
    # the patch conv's stride; None: the patch size (open_clip's non-overlapping patches). Below the
    # patch size the patches overlap (1st place's 290 px stage: patch 14, stride 12)
    patch_stride: int | None = None

    @property
    def stride(self) -> int:
        return self.patch_stride or self.patch_size

    @property
    def grid_size(self) -> int:
        """Patches per side: `(image_size - patch_size) // stride + 1` (a 'valid' convolution)."""
        return (self.image_size - self.patch_size) // self.stride + 1

    @property
    def num_tokens(self) -> int:
        """Sequence length through the transformer: the patch grid plus the class token."""
        return self.grid_size**2 + 1

    def check_geometry(self) -> None:
        """Raises ValueError unless the patches tile `image_size` exactly: stride in 1..patch_size,
        and `(image_size - patch_size)` a multiple of the stride (no pixel row silently dropped)."""
        if not 1 <= self.stride <= self.patch_size:
            raise ValueError(f"patch_stride must be in 1..patch_size ({self.patch_size}), got {self.patch_stride}; "
                             "a larger stride would skip pixels between patches")
        if self.image_size < self.patch_size or (self.image_size - self.patch_size) % self.stride:
            if self.stride == self.patch_size:
                raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
            fits = self.patch_size + self.stride * max(self.grid_size - 1, 0)
            raise ValueError(f"image_size {self.image_size} does not fit patches of {self.patch_size} at stride "
                             f"{self.stride}: (image_size - patch_size) must be a multiple of the stride, "
                             f"e.g. {fits} or {fits + self.stride}")

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)

    @property
    def feature_dim(self) -> int:
        return self.output_dim or self.width

    def to_dict(self) -> dict:
        return asdict(self)


# open_clip model configs (model_configs/*.json), visual tower only.
VIT_CONFIGS: dict[str, VitConfig] = {
    "ViT-S-32": VitConfig(patch_size=32, width=384, layers=12, heads=6, output_dim=384),
    "ViT-S-16": VitConfig(patch_size=16, width=384, layers=12, heads=6, output_dim=384),
    "ViT-M-32": VitConfig(patch_size=32, width=512, layers=12, heads=8, output_dim=512),
    "ViT-M-16": VitConfig(patch_size=16, width=512, layers=12, heads=8, output_dim=512),
    "ViT-B-32": VitConfig(patch_size=32, width=768, layers=12, heads=12, output_dim=512),
    "ViT-B-16": VitConfig(patch_size=16, width=768, layers=12, heads=12, output_dim=512),
    "ViT-L-14": VitConfig(patch_size=14, width=1024, layers=24, heads=16, output_dim=768),
    "ViT-L-14-336": VitConfig(
        image_size=336, patch_size=14, width=1024, layers=24, heads=16, output_dim=768
    ),
    "ViT-H-14": VitConfig(patch_size=14, width=1280, layers=32, heads=16, output_dim=1024),
    "ViT-g-14": VitConfig(
        patch_size=14, width=1408, layers=40, heads=16, mlp_ratio=4.3637, output_dim=1024
    ),
    # The demo's backbone: the same architecture, small enough to train on 2 CPU cores.
    "demo-tiny": VitConfig(image_size=64, patch_size=8, width=96, layers=4, heads=4, output_dim=96),
}


def vit_config(name: str, **overrides) -> VitConfig:
    """The config of a named backbone; `-quickgelu` suffixes select QuickGELU as open_clip does."""
    base = name.removesuffix("-quickgelu")
    if base not in VIT_CONFIGS:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(VIT_CONFIGS))}")
    cfg = VIT_CONFIGS[base]
    if name.endswith("-quickgelu"):
        cfg = replace(cfg, quick_gelu=True)
    return replace(cfg, **overrides) if overrides else cfg
