"""The recommended recipe's choices that follow the data: the settings left 'auto' made concrete from the image shape and
the data set's size, each with its reason, printed when training starts.

- widths (model.g_width, model.d_width): tuned on 28 px digits (G 16, D 64, RESULTS.md). D's first layers dominate a
  step's cost and grow with the image's area; D's first width is halved with each doubling of the side beyond 32 px
  (64 px: 32, 128 px: 16) so a step's cost grows with the side, not its square, and the channel cap (model.max_channels)
  bounds the deepest levels. A function of the shape alone: a saved generator rebuilds from its config and shape.
- ADA (reg.ada): on below reg.ada_below training images, where D overfits a small set within the budget
  (Karras et al. 2020); off for vector data.
"""

from gan.config import ModelConfig, Recipe

TUNED_SIDE = 32  # up to this side the widths tuned on 28 px digits hold
G_WIDTH, D_WIDTH, MIN_D_WIDTH = 16, 64, 16


def widths(image_shape: tuple[int, ...]) -> tuple[int, int]:
    """(g_width, d_width) for images [C, H, W]: G 16; D 64 up to 32 px, halved per doubling of the larger side beyond, at least 16."""
    side, d = max(image_shape[1:]), D_WIDTH
    while side > TUNED_SIDE and d > MIN_D_WIDTH:
        side, d = side // 2, d // 2
    return G_WIDTH, d


def with_widths(model: ModelConfig, image_shape: tuple[int, ...]) -> ModelConfig:
    """The model config with 'auto' widths made concrete for images of `image_shape` (what the network builders read)."""
    g, d = widths(image_shape) if len(image_shape) == 3 else (G_WIDTH, D_WIDTH)
    return model.model_copy(update={"g_width": g if model.g_width == "auto" else model.g_width,
                                    "d_width": d if model.d_width == "auto" else model.d_width})


def for_data(recipe: Recipe, image_shape: tuple[int, ...], num_images: int | None) -> tuple[Recipe, list[str]]:
    """The recipe with every data-dependent 'auto' made concrete for `num_images` training images of `image_shape` (None:
    not known, which leaves ADA off), and one line per choice saying why."""
    model, reg, reasons = with_widths(recipe.model, image_shape), recipe.reg, []
    if model.arch != "mlp" and len(image_shape) == 3 and "auto" in (recipe.model.g_width, recipe.model.d_width):
        why = "as tuned on 28 px digits" if max(image_shape[1:]) <= TUNED_SIDE else f"D halved per doubling of the side beyond {TUNED_SIDE} px"
        reasons.append(f"widths G {model.g_width}, D {model.d_width} for {'x'.join(map(str, image_shape))} images ({why}; "
                       f"at most {model.max_channels} channels per layer)")
    if reg.ada == "auto":
        if len(image_shape) != 3:
            on, why = False, "vector data"
        elif num_images is None:
            on, why = False, "data-set size not given"
        else:
            on = num_images < reg.ada_below
            why = f"{num_images} training images {'<' if on else '>='} reg.ada_below {reg.ada_below}"
        reasons.append(f"ADA {'on' if on else 'off'} ({why})")
        reg = reg.model_copy(update={"ada": on})
    elif reg.ada and len(image_shape) == 3:
        reasons.append(f"ADA on (reg.ada = true), target r_t {reg.ada_target:g}, p moving 0 -> 1 in {reg.ada_images:,} images")
    return recipe.model_copy(update={"model": model, "reg": reg}), reasons
