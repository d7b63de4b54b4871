"""edgeclass.convert: training directory -> int8 TFLite bundle (and Edge TPU model)."""
