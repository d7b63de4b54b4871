"""edgeclass.train: fine-tune an ImageNet MobileNet on a folder-per-class dataset.

Runs on the workstation (TensorFlow). The output is a training directory
(:mod:`edgeclass.train.rundir`) that ``edgeclass convert`` turns into a bundle.
"""
