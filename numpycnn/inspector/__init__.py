"""``numpycnn inspect``: a model shown from the inside.

- ``compute``: every number the page shows, computed by the engine (``Inspector``), from
  ``tracing`` (the forward pass on copies of the layers), ``backprop`` (the backward pass,
  negligible gradients, the softmax step by step), ``arithmetic`` (a unit's sum),
  ``fields`` (receptive fields) and ``novelty`` (does the input look like a digit at all).
- ``inputs``: the model's input (its shape, colour, how a file is prepared);
  ``sources``: its test set, from the model's own data source.
- ``run``: a run folder behind the page (its state as it trains, its snapshots, the
  timeline); ``live``: ``train --inspect``'s server process; ``evolution``: the first
  layer's filters through a run as an animated GIF.
- ``backward_numbers``: a unit's dQ/da and a weight's dQ/dw recomputed by each layer's rule,
  named as the papers write it (``papers``); ``learning``: training steps on one image on a
  copy of the model, per page session.
- ``server``: the local HTTP server and its JSON API over an ``Inspector``.
- ``page.html``: the page itself, one self-contained file with no build step.
"""

from .compute import InspectionError, Inspector
from .server import InspectServer, make_server

__all__ = ["InspectServer", "InspectionError", "Inspector", "make_server"]
