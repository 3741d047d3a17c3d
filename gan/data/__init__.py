"""Images in, a Parquet dataset out, and read back.

Where images come from: `sources` (the `FORMATS` table; opening a source), one module per format in `formats/`, where a
file or folder is (`location`) and what its files hash to (`inputs`). A source opened: `rows` (labels now, images on
demand), `arrays` (rows of a stored array), `shaping` (channels and size), `errors` (bad inputs). The dataset:
`writer` (split, shards, publish), `dedup` (duplicate images), `manifest` (what a dataset folder holds), `reader` (a
split read back).

This package imports none of them: import the module you need, so that what reads a dataset (the training, whose code
digest covers what it imports) does not load the source readers.
"""
