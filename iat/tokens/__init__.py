"""Token store: materialised instance tokens per user, with leak-free fetch of the last L before a timestamp.

Write once with ``write_store``, grow online with ``append_segment`` / ``set_conversion``, fold with ``compact``,
read with ``TokenStore.open(path).fetch_before(users, ts, L)``. See ``store`` for the fetched encodings and
``writer`` for why publication is atomic. The online store that ranking replicas share is ``online`` (Redis: the
same ``fetch_before`` contract, ``publish`` from a file-store version).
"""

from iat.tokens.inspection import format_inspection, inspect_store
from iat.tokens.manifest import SOURCE_KEYS, SourceMismatchError, TokenStoreError
from iat.tokens.rows import NEVER
from iat.tokens.segments import append_segment, compact, set_conversion
from iat.tokens.store import CONVERSION_PAD, CONVERSION_UNKNOWN, FetchResult, TokenStore
from iat.tokens.writer import write_store

__all__ = [
    "CONVERSION_PAD",
    "CONVERSION_UNKNOWN",
    "NEVER",
    "SOURCE_KEYS",
    "FetchResult",
    "SourceMismatchError",
    "TokenStore",
    "TokenStoreError",
    "append_segment",
    "compact",
    "format_inspection",
    "inspect_store",
    "set_conversion",
    "write_store",
]
