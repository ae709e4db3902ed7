"""maxsq_lib: an exact, tested library for UDA semantic segmentation with the Maximum Squares
loss (Chen, Xue, Cai, ICCV 2019): DeepLabv2, the losses, the datasets, evaluation and the engine."""

__version__ = "0.1.0"
