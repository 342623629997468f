"""Settings, their defaults and the environment variables that set them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kbindex import __version__

# Environment variables, one per common option.
ENV_DB = "KBINDEX_DB"
ENV_COLLECTION = "KBINDEX_COLLECTION"
ENV_MODEL = "KBINDEX_MODEL"
ENV_DEVICE = "KBINDEX_DEVICE"
ENV_CHROMA_URL = "KBINDEX_CHROMA_URL"
ENV_BACKEND = "KBINDEX_BACKEND"
ENV_QUANTIZE = "KBINDEX_QUANTIZE"
ENV_CACHE_DIR = "KBINDEX_CACHE_DIR"  # the per-machine model cache (kbindex/embedding/modelcache.py)

DEFAULT_DB = "data/index"
DEFAULT_COLLECTION = "kbindex"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_DEVICE = "auto"
# auto: OpenVINO on CPU (ONNX Runtime where OpenVINO is not installed; both faster than PyTorch,
# and a query never imports torch), PyTorch on a GPU.
DEFAULT_BACKEND = "auto"
# auto: what an existing collection holds; for a new one int8 (static on OpenVINO, dynamic on ONNX
# Runtime; SciFact nDCG@10 against fp32 in docs/benchmarks.md) and none on PyTorch.
DEFAULT_QUANTIZE = "auto"
# Prepared models (ONNX export, int8) live in the per-machine model cache; in <db>/models only when
# that cannot be written.
MODEL_FALLBACK = "models"

# all-MiniLM-L6-v2 has a 256-word-piece window; using all of it keeps whole KB sections together
# (most are shorter) while a 32-token overlap (one or two sentences) keeps a sentence that straddles
# a boundary findable from either side.
DEFAULT_CHUNK_TOKENS = 256
DEFAULT_OVERLAP = 32

# Per-request limits for fetching a single URL.
DEFAULT_TIMEOUT = 20.0  # seconds, for connect and for each read
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # decompressed body cap
DEFAULT_MAX_REDIRECTS = 10
DEFAULT_RETRIES = 2  # extra tries after a timeout, connection error, 429 or 5xx
DEFAULT_BACKOFF = 0.5  # seconds before the first retry; doubles each time
MAX_RETRY_WAIT = 60.0  # a longer Retry-After is not waited for: the page fails instead
USER_AGENT = f"kbindex/{__version__} (+https://github.com/kbindex/kbindex; knowledge-base indexer)"

# Crawling (see crawl/). Politeness: one request per host every DEFAULT_DELAY seconds at most,
# whatever the concurrency; robots.txt Crawl-delay raises it (up to MAX_CRAWL_DELAY).
DEFAULT_DELAY = 0.5
DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_PAGES = 10_000
MAX_CRAWL_DELAY = 60.0

# Folder sources: the extensions indexed.
TEXT_EXTENSIONS = (".html", ".htm", ".md", ".markdown", ".txt", ".rst")
DOCUMENT_EXTENSIONS = (".pdf", ".docx")  # read through pypdf and python-docx
FOLDER_EXTENSIONS = TEXT_EXTENSIONS + DOCUMENT_EXTENSIONS

# Chroma's collection naming rule (chromadb validates the same on create).
_COLLECTION_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9._-]{1,510})[a-zA-Z0-9]$")
COLLECTION_RULE = (
    "a collection name must be 3-512 characters from [a-zA-Z0-9._-], "
    "starting and ending with a letter or digit"
)


def valid_collection_name(name: str) -> bool:
    """True when Chroma accepts the name."""
    return bool(_COLLECTION_NAME.match(name)) and ".." not in name


@dataclass(frozen=True)
class Settings:
    """Where the index lives and which model fills it."""

    db: Path = Path(DEFAULT_DB)
    collection: str = DEFAULT_COLLECTION
    model: str = DEFAULT_MODEL
    device: str = DEFAULT_DEVICE
    chroma_url: str | None = None  # a Chroma server instead of the local store in db
    backend: str = DEFAULT_BACKEND
    quantize: str = DEFAULT_QUANTIZE
    timeout: float = DEFAULT_TIMEOUT  # seconds the Chroma server may take to connect or answer

    @property
    def model_fallback(self) -> Path:
        """Where prepared models go when the machine's model cache cannot be written."""
        return Path(self.db) / MODEL_FALLBACK
