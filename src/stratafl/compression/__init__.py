"""Update compression: the codecs a session may choose for its clients' updates.

Low in the layers (numpy, `stratafl.params` and the errors only): the client encodes with
it, the combiner's staging decodes with it before any aggregation rule sees an update, and
the rules never know an update was compressed.
"""

from stratafl.compression.codecs import decode, encoded_layout
from stratafl.compression.spec import NONE, Codec, Compression, check_codec, parse_compression
from stratafl.compression.update import ErrorFeedback, encode_update, update_layout

__all__ = [
    "NONE",
    "Codec",
    "Compression",
    "check_codec",
    "ErrorFeedback",
    "decode",
    "encode_update",
    "encoded_layout",
    "parse_compression",
    "update_layout",
]
