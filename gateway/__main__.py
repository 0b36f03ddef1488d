"""`python -m gateway` and the `gateway` command.

`gateway serve` reloads on SIGHUP, but its imports take about half a second and until
something takes charge of SIGHUP its default action is to exit: a deploy that reloads right
after a start would take the gateway down. So the first thing it does, before importing
anything, is block SIGHUP: one sent meanwhile waits, and every process it starts (workers,
the embedded store) inherits the block, until a worker's app factory takes the signal
(app.create_app_from_env).
"""

import signal
import sys


def main() -> int:
    if sys.argv[1:2] == ["serve"]:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    from gateway.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
