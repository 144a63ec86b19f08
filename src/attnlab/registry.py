"""Name -> class registries for the variants (positional encodings, pooling, scaling, tasks): each variant is
one small class registered under the name the config uses. The config schema turns every registry into an Enum,
so an unknown name fails when Hydra composes the config, with the valid names listed."""

from collections.abc import Callable
from enum import StrEnum
from typing import Any, Generic, TypeVar

from attnlab.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, key: str) -> None:
        self.key = key  # the config key that selects from this registry, e.g. "model.pos_enc"
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.key}: {name!r} is registered twice")
            self._items[name] = item
            return item

        return add

    def names(self) -> list[str]:
        return list(self._items)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ConfigError(self.key, name, f"expected one of {self.names()}")
        return self._items[name]

    def name_of(self, item: Any) -> str:
        return next(name for name, registered in self._items.items() if registered is item)

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def enum(self) -> type[StrEnum]:
        """An Enum of the registered names, for the structured-config schema (a StrEnum prints as the bare
        name, so `${model.pos_enc}` reads "rope")."""
        cls_name = "".join(part.title() for part in self.key.replace(".", "_").split("_"))
        return StrEnum(cls_name, {name: name for name in self._items})  # type: ignore[return-value]
