"""Per-sample random streams and Brownian trees, as the samplers take them: ``RowGenerators``
(one stream per row, seeded from (seed, index) by ``row_seed``) and ``BrownianTree`` (one
Brownian path per row), defined in ``scorematch._random`` and ``scorematch._brownian``."""

from scorematch._brownian import BrownianTree
from scorematch._random import RowGenerators, row_seed

__all__ = ["BrownianTree", "RowGenerators", "row_seed"]
