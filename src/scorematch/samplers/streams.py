"""Per-sample random streams and Brownian trees, as the samplers take them: ``RowGenerators``
(one stream per row, seeded from (seed, index) by ``row_seed``) and ``BrownianTree`` (one
Brownian path per row; ``sigma_noise`` its increments in log sigma as a ``noise(sigma, sigma_next)``
function), defined in ``scorematch._random`` and ``scorematch._brownian``."""

from scorematch._brownian import BrownianTree, sigma_noise
from scorematch._random import RowGenerators, row_seed

__all__ = ["BrownianTree", "RowGenerators", "row_seed", "sigma_noise"]
