"""edgeclass.convert: training directory -> int8 TFLite bundle (and Edge TPU model).

Modules, one job each:

- :mod:`.pipeline`        the steps of ``edgeclass convert``, in order
- :mod:`.samples`         stratified calibration sample; images loaded the device's way
- :mod:`.quantize`        Keras -> SavedModel (batch 1) -> int8 / float32 TFLite (TensorFlow)
- :mod:`.compare`         float Keras vs TFLite through the device's Classifier; --max-drop
- :mod:`.report`          report/: metrics.json, comparison.txt, confusion.png
- :mod:`.tflite_graph`    a .tflite file's ops and tensors, without TensorFlow
- :mod:`.edgetpu_ops`     Edge TPU pre-flight from Coral's operator table (no TensorFlow)
- :mod:`.edgetpu_compile` running edgetpu_compiler and parsing its log
- :mod:`.cli`             the command (imports nothing heavy at module level)

Decisions, measured on ../shared/data/flowers (180 test images; see
benchmarks/convert_flowers.py):

- Normalisation stays inside the model (manifest ``normalization: model``).
  Splitting the Rescaling layer off to the device gave the same or lower int8
  accuracy (MobileNetV2 0.35: 86.11% both ways; 1.0: 85.56% in the model vs
  84.44% on the device) and its input quantization (scale 2/255, zero point
  127) maps pixel bytes onto the int8 grid with half-way rounding, while in the
  model the uint8 input is the pixel byte itself (scale 1, zero point 0).
  ``--normalization device`` remains for graphs that want it.
- The calibrated input range is pinned to 0..255 (two corner pixels of one
  calibration image): otherwise photos that never reach 255 give an input
  scale below 1 and the Pi clips every brighter pixel.
- Weights are quantized per output channel by default. ``--per-tensor``
  collapsed MobileNetV2 0.35 from 86.67% to 26.67% (the depthwise layers' ranges
  differ too much per channel); ``--max-drop`` refuses such a model.
- The export fixes batch 1, so no tensor has a dynamic dimension (the Edge
  TPU compiler refuses those).
"""
