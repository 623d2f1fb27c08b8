"""Small shared helpers: atomic files, the backend guard, length batching, progress lines.

Kept free of imports: the runtime encoder (`marc_keras.export.OnnxEncoder`)
uses some of these modules and must not load Keras, torch or TensorFlow.
"""
