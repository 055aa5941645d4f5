"""Seeds and random-number-generator state: moved down to :mod:`tlroutes.seeding`.

Data (:mod:`tlroutes.data`) derives seeds too and sits below training, so the functions live in
the bottom layer; this module re-exports them for the training code and routes that import them
from here.
"""

from tlroutes.seeding import derive_seed, get_rng_state, seed_everything, set_rng_state

__all__ = ["derive_seed", "get_rng_state", "seed_everything", "set_rng_state"]
