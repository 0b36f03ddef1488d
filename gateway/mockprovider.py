"""The mock provider's old address, for tools outside this repository that still import it
(`from gateway.mockprovider import MockProvider`, `python -m gateway.mockprovider`). It lives
in gateway/demo/ with the rest of the demo; import it from there."""

from __future__ import annotations

from gateway.demo.mockprovider import MockProvider, Step, main

__all__ = ["MockProvider", "Step", "main"]

if __name__ == "__main__":
    main()
