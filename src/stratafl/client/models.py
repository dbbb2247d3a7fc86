"""The last models a client (or a process of swarm clients) downloaded, by id.

A validation task follows the training task of the same model: the model is downloaded
once. A swarm process keeps one shelf for all its clients, so ten thousand clients hold
the round's model once; their apps then get read-only arrays, so no app can change a
model under another.
"""

from __future__ import annotations

from collections import OrderedDict

from stratafl.params import Params

__all__ = ["ModelShelf"]


class ModelShelf:
    """The last ``size`` models downloaded, by id; with ``shared``, their arrays are made
    read-only as they are put on the shelf."""

    def __init__(self, size: int, *, shared: bool) -> None:
        self._size = size
        self._shared = shared
        self._models: OrderedDict[str, Params] = OrderedDict()

    def get(self, model_id: str) -> Params | None:
        return self._models.get(model_id)

    def put(self, model_id: str, params: Params) -> None:
        if self._shared:
            for array in params.values():
                array.flags.writeable = False
        self._models[model_id] = params
        self._models.move_to_end(model_id)
        while len(self._models) > self._size:
            self._models.popitem(last=False)
