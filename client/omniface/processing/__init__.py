"""Numpy-only pre/post-processing shared by the Triton python-backend steps, the build
scripts, the in-process pipeline and the SDK.

Pure functions over numpy arrays (Pillow for decoding, resizing and warping, because
its C loops are fast and it is a base dependency): no Triton, no torch. Keeping them
here means the server, the tests and training all cut, map and decode identically.

Coordinates everywhere are continuous pixel coordinates: pixel (col, row) covers
[col, col + 1) x [row, row + 1), so its centre is (col + 0.5, row + 0.5). That is
Pillow's convention for resize and transform, and the detector's cell centres
((x + 0.5) * stride) use it too, so no half-pixel shifts creep in between steps.

- ``image``: decode and validate frames, letterbox for the detector, map points back.
- ``detection``: anchor centres, decoding of the raw detector outputs, NMS.
- ``align``: similarity transforms and the 5-point aligned face crops.
"""

from omniface.processing import align, detection, image

__all__ = ["align", "detection", "image"]
