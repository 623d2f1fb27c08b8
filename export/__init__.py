"""Production side of marc-keras: ONNX export, ONNX Runtime encoding, the embedding store.

Installed as `marc_keras.export`. `OnnxEncoder`, `EmbeddingStore` and
`load_embedding_table` need only onnxruntime, tokenizers, numpy and pyarrow
(`ShardedEncoder` too, plus Ray for its ray engine);
`OnnxExporter` needs Keras and torch, and is imported on first use.
"""

import importlib

_PUBLIC = {
    "BundleManifest": "marc_keras.export.bundle_manifest",
    "EmbeddingStore": "marc_keras.export.embedding_store",
    "OnnxEncoder": "marc_keras.export.onnx_encoder",
    "OnnxExporter": "marc_keras.export.onnx_exporter",
    "ParityCheck": "marc_keras.export.onnx_exporter",
    "ShardedEncoder": "marc_keras.export.sharded_encoder",
    "load_embedding_table": "marc_keras.export.embedding_store",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'marc_keras.export' has no attribute '{name}'")
