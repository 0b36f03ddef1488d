"""Where the gateway's log lines go, in every worker process."""

from __future__ import annotations


def log_config(level: str = "INFO") -> dict[str, object]:
    """uvicorn applies this in every worker process, so the gateway's lines reach stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s[%(process)d]: "
                                          "%(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr"}},
        "loggers": {"gateway": {"handlers": ["stderr"], "level": level, "propagate": False},
                    "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
                    "uvicorn.error": {"level": "WARNING"}},
    }
