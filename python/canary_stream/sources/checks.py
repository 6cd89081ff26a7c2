"""Field checks shared by the source configs: every error is a ``ValueError`` that names the
field as ``<section>.<field>`` (``http.port: must be 0..65535, got 70000``)."""

from __future__ import annotations

from typing import NoReturn


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `port: true` in a config is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


class FieldChecks:
    """Checks over the fields of one config object, reported under ``section``."""

    def __init__(self, section: str, config: object) -> None:
        self.section = section
        self.config = config

    def fail(self, name: str, why: str) -> NoReturn:
        raise ValueError(f"{self.section}.{name}: {why}")

    def listen_address(self, host: str = "host", port: str = "port") -> None:
        """A non-empty host and a port in 0..65535 (0: an ephemeral port)."""
        if not getattr(self.config, host):
            self.fail(host, "an address to listen on is required")
        value = getattr(self.config, port)
        if not _is_int(value) or not 0 <= value <= 65535:
            self.fail(port, f"must be 0..65535, got {value!r}")

    def positive_ints(self, *names: str) -> None:
        for name in names:
            value = getattr(self.config, name)
            if not _is_int(value) or value <= 0:
                self.fail(name, f"must be a positive integer, got {value!r}")

    def non_negative_ints(self, *names: str) -> None:
        for name in names:
            value = getattr(self.config, name)
            if not _is_int(value) or value < 0:
                self.fail(name, f"must be an integer >= 0, got {value!r}")

    def positive_numbers(self, *names: str) -> None:
        for name in names:
            value = getattr(self.config, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                self.fail(name, f"must be > 0, got {value!r}")
