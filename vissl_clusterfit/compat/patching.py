"""Apply a monkeypatch once per process, by name (compat and compat_run)."""

from typing import Callable, Dict


APPLIED: Dict[str, bool] = {}  # patch name -> applied


def once(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            if not APPLIED.get(name):
                fn()
                APPLIED[name] = True

        run.__name__ = fn.__name__
        run.__doc__ = fn.__doc__
        return run

    return wrap
