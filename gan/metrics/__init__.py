"""Offline image-quality metrics, one module per metric; import the module you need (`from gan.metrics.fid import ...`).

- registry: METRICS, the metrics by name, each registered by its own module (`compute("kid", real, fake)`)
- fid, kid, precision_recall, density_coverage, memorisation: two feature sets -> numbers; inception_score, classes: one
  set's class probabilities -> numbers; bootstrap and distances: what they share
- classifier: the domain classifier, a small CNN trained on the data: the class metrics' probabilities, and the
  default feature network (FID's features, IS's softmax)
- selfsupervised: a small conv encoder trained on the data without labels (SimCLR-style): the feature network of
  unlabelled and few-class data
- inception: the FID Inception-v3 from a local weights file, the other feature network
- extractors: the feature networks by name (`build_extractor("inception", inception_weights=...)`), each with the
  key a report names it by
- evaluation: the protocol (as stylegan2-ada's metric_main): a generator's report, every listed metric run through the
  registry; quick_fid: the FID run during training

Nothing is imported here: importing one metric (the training loop's quick FID) does not import them all.
"""
