"""Training data: the real data sets in their published layouts, the deterministic
train/val split, augmentation, and the mixed partial-label training stream.

Parsers and augmentation need only numpy and Pillow; ``TrainStream`` (in ``mixed``)
needs torch (the ``train`` extra) and is imported from ``omniface.data.mixed``.
"""

from .augment import TEMPLATE_FACE_BOX, ColourJitter, CropAugment, crop_sample, flip_labels, flip_landmarks
from .detection import DetectionAugment, DetectionSample, detection_sample
from .faces import DATASET_TASKS, SOURCE_FACE_POINTS, FaceRecord, crop_to_template, load_faces, load_fer2013, load_genki4k, load_utkface, read_genki_labels
from .paths import DEFAULT_DATA_ROOT, data_root, in_split, split_value
from .widerface import DIFFICULTY_MIN_HEIGHT, WiderImage, difficulty_masks, load_widerface, parse_label_file

__all__ = [
    "DATASET_TASKS", "DEFAULT_DATA_ROOT", "DIFFICULTY_MIN_HEIGHT", "SOURCE_FACE_POINTS", "TEMPLATE_FACE_BOX",
    "ColourJitter", "CropAugment", "DetectionAugment", "DetectionSample", "FaceRecord", "WiderImage",
    "crop_sample", "crop_to_template", "data_root", "detection_sample", "difficulty_masks", "flip_labels",
    "flip_landmarks", "in_split", "load_faces", "load_fer2013", "load_genki4k", "load_utkface",
    "load_widerface", "parse_label_file", "read_genki_labels", "split_value",
]
