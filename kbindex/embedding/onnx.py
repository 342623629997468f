"""The ONNX runtimes: a sentence-transformers model exported to ONNX (export.py), run by ONNX
Runtime or OpenVINO (openvino.py), tokenized with the `tokenizers` library, pooled in numpy.

Once its artifact is in the model cache, this path imports neither torch nor
sentence-transformers: a query starts in well under a second, and CPU throughput is higher.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from kbindex.embedding.base import artifact_identity, identity_suffix
from kbindex.embedding.export import ARTIFACT_FILES, INT8_ARTIFACTS, ModelArtifacts, artifact_kind
from kbindex.embedding.modelcache import KERNELS, ModelCache
from kbindex.embedding.spec import ModelSpec, available_cores, pool
from kbindex.errors import ModelError, UsageError

PAD_MULTIPLE = 16


class OnnxEmbedder:
    """A sentence-transformers model exported to ONNX, run by onnxruntime or OpenVINO and
    tokenized with the `tokenizers` library.

    Thread-safe: embed() may run in a background thread while another thread counts tokens;
    the runtimes and tokenizers release the GIL while they work.
    """

    def __init__(self, identity: str, spec: ModelSpec, cache_dir: Path | None = None, quantize: str = "none",
                 batch_size: int | None = None, threads: int | None = None, runtime: str = "onnx",
                 fallback_dir: Path | None = None, pinned: dict | None = None):
        if runtime not in ("onnx", "openvino"):
            raise UsageError(f"unknown runtime {runtime!r}")
        if runtime == "openvino":
            from kbindex.embedding import openvino

            openvino.require()  # said at once, not at the first text embedded
        self.model_id = identity
        self.spec = spec
        self.quantize = quantize
        self.runtime = runtime
        # int8 vectors differ from fp32 ones (mean cosine ~0.995), and static from dynamic int8: a
        # different identity keeps a collection from mixing them.
        self.name = identity + identity_suffix(runtime, quantize)
        self.cache = ModelCache(cache_dir, fallback_dir, notice=self._say)
        self.cache_dir = self.cache.root
        self.pinned = pinned
        self.artifacts = ModelArtifacts(identity, spec, artifact_kind(runtime, quantize), self.cache, pinned)
        self.artifact = None  # the prepared model (modelcache.Artifact) once model_path() ran
        self._identity: str | None = None
        self.threads = threads or available_cores()
        # Texts per inference call. Small batches are faster on a CPU: on 2 cores, SciFact chunks
        # ran at 81 chunks/s (int8) and 53 (fp32) in batches of 4, against 65 and 43 in batches
        # of 32 (less padding, and the activations stay in cache). Two per thread keeps each
        # thread's share of a matrix product from getting too small on larger machines.
        self.batch_size = batch_size or min(32, max(4, 2 * self.threads))
        self.dimension = spec.dimension
        self.max_tokens = spec.max_tokens
        # OpenVINO keeps compiled kernels for every input shape it has seen, in caches that grow
        # with the number of shapes: padding the token dimension to a multiple of 16 bounds them.
        self.pad_multiple = PAD_MULTIPLE if runtime == "openvino" else 1
        # Told of the once-per-model work (export, quantization: tens of seconds) before it starts;
        # the CLI prints it on stderr.
        self.notice: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self._session = None
        self._counter = None
        self._encoder = None

    # Tokenizers: one that only counts (no truncation, no padding: a tokenizer.json may carry
    # both, all-MiniLM-L6-v2's pads and truncates to 128), one that truncates to the window.
    def _tokenizers(self):
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    # One thread per call: an index run counts tokens while the model embeds in
                    # another thread, and the tokenizer's own thread pool would take cores from
                    # the runtime (measured: counting took twice the CPU time, the run 4% longer).
                    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                    from tokenizers import Tokenizer

                    path = str(self.spec.folder / "tokenizer.json")
                    try:
                        counter = Tokenizer.from_file(path)
                        encoder = Tokenizer.from_file(path)
                    except Exception as exc:
                        raise ModelError(f"cannot read {path}: {exc}") from exc
                    counter.no_truncation()
                    counter.no_padding()
                    encoder.no_padding()
                    encoder.enable_truncation(self.max_tokens)
                    self._counter = counter
                    self._encoder = encoder
        return self._counter, self._encoder

    def _prepare(self, texts: Sequence[str]) -> list[str]:
        return [t.lower() for t in texts] if self.spec.do_lower_case else list(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        counter, _ = self._tokenizers()
        encoded = counter.encode_batch(self._prepare(texts), add_special_tokens=True)
        return [len(e.ids) for e in encoded]

    @property
    def identity(self) -> str:
        """The embedding cache's key (base.py): the name, plus for int8 the key of the artifact
        the vectors come from, known without loading the model (weights hash remembered)."""
        if self._identity is None:
            key = self.artifacts.key() if self.artifacts.kind in INT8_ARTIFACTS else None
            self._identity = artifact_identity(self.name, key)
        return self._identity

    def artifact_spec(self, kind: str):
        """The model cache's key (modelcache.ArtifactSpec) for one kind of artifact of this model."""
        return self.artifacts.spec_of(kind)

    def model_path(self) -> Path:
        """The prepared model file for this runtime and quantization, made on first use.

        Raises:
            ModelError: it cannot be made, or the collection was built with another int8 model
                that this machine neither has nor makes.
        """
        self.artifact = self.artifacts.prepare()
        return self.artifact.file(ARTIFACT_FILES[self.artifacts.kind])

    def _say(self, message: str) -> None:
        if self.notice is not None:
            self.notice(message)

    @property
    def session(self):
        """The runtime's session: input_names, and run(feeds) -> token embeddings."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._load_session()
        return self._session

    def import_runtime(self) -> None:
        """Import the Python modules inference needs (numpy, tokenizers, the runtime).

        kbindex.warmup calls this in the main thread before a worker thread loads the model while
        the main thread imports chromadb: two threads importing one package at once can see it
        half initialized (numpy raised ImportError that way), so the worker must import nothing
        that chromadb also imports.
        """
        import numpy  # noqa: F401
        import tokenizers  # noqa: F401

        if self.runtime == "openvino":
            from kbindex.embedding import openvino

            openvino.import_openvino()
        else:
            import onnxruntime  # noqa: F401

    def _load_session(self):
        try:
            path = self.model_path()
        except OSError as exc:
            raise ModelError(f"cannot write the model cache in {self.cache_dir}: {exc}") from exc
        if self.runtime == "openvino":
            from kbindex.embedding import openvino

            return openvino.OpenVinoSession(path, self.threads, path.parent / KERNELS)
        return _OrtSession(path, self.threads)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed_array(texts).tolist()

    def embed_array(self, texts: Sequence[str]):
        """Unit-length float32 vectors as a numpy array (n, dimension)."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        session = self.session
        _, encoder = self._tokenizers()
        encoded = encoder.encode_batch(self._prepare(texts), add_special_tokens=True)
        # Sorted by length, so each batch pads to about its own length rather than the longest.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
        out = np.empty((len(encoded), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            picked = order[start:start + self.batch_size]
            width = max(len(encoded[i].ids) for i in picked)
            if self.pad_multiple > 1:  # few distinct shapes (see __init__); never past the window
                width = max(width, min(-(-width // self.pad_multiple) * self.pad_multiple, self.max_tokens))
            ids = np.zeros((len(picked), width), dtype=np.int64)
            mask = np.zeros((len(picked), width), dtype=np.int64)
            types = np.zeros((len(picked), width), dtype=np.int64)
            for row, i in enumerate(picked):
                e = encoded[i]
                ids[row, :len(e.ids)] = e.ids
                mask[row, :len(e.ids)] = e.attention_mask
                types[row, :len(e.ids)] = e.type_ids
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            tokens = session.run({n: feeds[n] for n in session.input_names})
            out[picked] = pool(tokens, mask, self.spec.pooling)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.clip(norms, 1e-12, None)


class _OrtSession:
    """An onnxruntime session with as many threads as the process may use.

    Thread-safe as it is: ONNX Runtime guarantees that several threads may call Run on one
    InferenceSession at once (its threading notes); each call has its own inputs and outputs, so
    unlike OpenVINO's infer requests (openvino.OpenVinoSession) nothing needs pooling.
    """

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"cannot load {path} (delete it to export again): {exc}") from exc
        self.input_names = [i.name for i in self._session.get_inputs()]

    def run(self, feeds: dict):
        return self._session.run(None, feeds)[0]
