"""Embedding: turn texts into unit-length vectors. The only package importing the model stack.

Three runtimes run the same sentence-transformers model: PyTorch through sentence-transformers
(torch.py), and ONNX Runtime or OpenVINO on a graph exported once from that model (onnx.py,
openvino.py), prepared once per machine in the model cache (export.py, modelcache.py) and keyed by
the model files' hashes and whatever else changes the result. The modules, in the order a text
travels through them:

    base.py        the Embedder protocol; the model identity a collection records and the vector
                   identity the embedding cache is keyed by
    loader.py      which embedder runs a model: backend choice, quantization, registered embedders
    spec.py        the model folder: configs, tokenizer, file hashes, pooling (read by every runtime)
    export.py      the ONNX export and the int8 models, as artifacts of the model cache
    modelcache.py  the per-machine artifact cache, and which index folders use which artifact
    torch.py       the PyTorch runtime
    onnx.py        the ONNX runtimes' embedder (ONNX Runtime's session is here)
    openvino.py    OpenVINO's session and the NNCF static int8 calibration

Nothing heavy is imported here: torch, onnxruntime and OpenVINO load on first use.
"""

from kbindex.embedding.base import Embedder, artifact_identity, model_of
from kbindex.embedding.loader import load_embedder, pick_backend, register_embedder
from kbindex.embedding.spec import packaged_model_path

__all__ = [
    "Embedder",
    "artifact_identity",
    "load_embedder",
    "model_of",
    "packaged_model_path",
    "pick_backend",
    "register_embedder",
]
