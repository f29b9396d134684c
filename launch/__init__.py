"""Launch helpers (shell entry points and ``python -m launch.prepare_data``); not installed."""
