"""Offline image-quality metrics, one module per metric.

- classifier: the domain classifier, a small CNN trained on the data: the class metrics' probabilities, and the
  default feature network (FID's features, IS's softmax)
- inception: the FID Inception-v3 from a local weights file, the other feature network
- extractors: the feature networks by name (`build_extractor("inception", inception_weights=...)`), each with the
  key a report names it by
- fid, kid, precision_recall, density_coverage, memorisation: two feature sets -> numbers; each registers
  a function under its module's name in METRICS (`compute("kid", real, fake)`)
- inception_score, classes: one set's class probabilities -> numbers
- protocol: the evaluation's Scores of one image set against the training images' Reference; quick_fid: the FID run during training

The registered functions are not re-exported here, as their names would hide their modules.
"""

from gan.metrics import density_coverage, fid, kid, memorisation, precision_recall  # noqa: F401  (fills METRICS)
from gan.metrics.classes import class_histogram, code_agreement, effective_classes, kl_divergence, label_accuracy
from gan.metrics.classifier import FEATURE_DIM, Classifier, accuracy, embed, source_digest, to_float, train_classifier
from gan.metrics.extractors import EXTRACTORS, Extractor, build_extractor, inception_key, rebuild
from gan.metrics.fid import (
    StreamingStats, check_sample_count, frechet_distance, frechet_distance_from_stats, gaussian_stats, streaming_stats,
)
from gan.metrics.inception import FIDInceptionV3, WeightsError, load_fid_inception
from gan.metrics.inception_score import inception_score
from gan.metrics.kid import kernel_inception_distance, mmd2_unbiased
from gan.metrics.memorisation import Memorisation, find_memorisation
from gan.metrics.protocol import Reference, Scores, score
from gan.metrics.quick_fid import QuickFID
from gan.metrics.registry import METRICS, compute, register

__all__ = [
    "EXTRACTORS", "FEATURE_DIM", "METRICS", "Classifier", "Extractor", "FIDInceptionV3", "Memorisation", "QuickFID", "Reference", "Scores",
    "StreamingStats", "WeightsError", "accuracy", "build_extractor", "check_sample_count", "class_histogram", "code_agreement",
    "compute", "effective_classes", "embed", "find_memorisation", "frechet_distance", "frechet_distance_from_stats",
    "gaussian_stats", "inception_key", "inception_score", "kernel_inception_distance", "kl_divergence", "label_accuracy", "load_fid_inception",
    "mmd2_unbiased", "rebuild", "register", "score", "source_digest", "streaming_stats", "to_float", "train_classifier",
]
