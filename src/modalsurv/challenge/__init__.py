"""The CHIMERA grand-challenge interface: a trained run folder answers one case read from
``/input`` (``answer_case``) or scores a whole CHIMERA folder (``score_folder``).

``sockets`` holds the one table of socket slugs and folders; ``model`` rebuilds the
recorded encoders and extracts a case's features as training did; ``outputs`` turns the
fold ensemble's prediction into the number each task asks for."""
