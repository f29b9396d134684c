"""The SENT / AER recipe on veRL's legacy driver. Importing it registers the ``entropy_rl``
knobs (recipe.sent.config) with Hydra, which ``conf/entropy_rl.yaml`` composes."""

from recipe.sent.config import register as _register

_register()
