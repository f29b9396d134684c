"""Score only: ``python -m recipe.sent.score [hydra overrides]``.

Samples ``entropy_rl.scoring.n_samples`` answers per training prompt from the initial policy
(at ``entropy_rl.scoring.temperature`` / ``top_p`` / ``max_response_length``), computes each
prompt's semantic entropy and pass rate, and writes the cache that training runs with the
same data, model and scoring settings reuse — score once on a cluster, train many ablations.
Also writes the training rows with the scores as a parquet (``entropy_rl.scoring.output_file``).
"""

import sys

import hydra

from recipe.sent.main import CONF_DIR, cli, start


@hydra.main(config_path=CONF_DIR, config_name="entropy_rl", version_base=None)
def main(config) -> None:
    start(config, mode="score")


if __name__ == "__main__":
    cli(sys.argv[1:], main)
