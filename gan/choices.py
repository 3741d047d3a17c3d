"""The recipe's named choices, each read from its own table: a name in the config is valid when its table has it,
so an architecture or a loss is added as one table row, with no second list to keep equal. The tables need torch,
the config does not: the config takes any name, and these checks run where a recipe is loaded or trained."""

from collections.abc import Callable, Collection

from gan.config import ConfigError, Recipe
from gan.networks import ARCHS
from gan.objectives import LOSSES

# key -> (its value in a recipe, the table whose keys are the choices)
CHOICES: dict[str, tuple[Callable[[Recipe], str], Collection[str]]] = {
    "model.arch": (lambda r: r.model.arch, ARCHS),
    "train.loss": (lambda r: r.train.loss, LOSSES),
}


def expected(names: Collection[str]) -> str:
    """"Input should be 'a', 'b' or 'c'", as the config's other choices say it."""
    quoted = [repr(n) for n in names]
    return "Input should be " + (f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0])


def unknown_choice(recipe: Recipe) -> tuple[str, str, str] | None:
    """The first name no table has, as (key, value, what is allowed); None when every name is known."""
    for key, (value_of, table) in CHOICES.items():
        if value_of(recipe) not in table:
            return key, value_of(recipe), expected(table)
    return None


def check_choices(recipe: Recipe) -> None:
    if bad := unknown_choice(recipe):
        key, value, allowed = bad
        raise ConfigError(f"config error: {key} = {value!r}: {allowed}")
