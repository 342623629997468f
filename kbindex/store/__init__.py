"""Where chunks are kept: the Chroma collection (chroma.py), the keyword index beside it
(lexical.py), the ledger of what was indexed from each source (ledger.py) and the write lock
(lock.py)."""

from kbindex.store.index import Index, SourceSummary, Stats, keyword_key, scope_name

__all__ = ["Index", "SourceSummary", "Stats", "keyword_key", "scope_name"]
