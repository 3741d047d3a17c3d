"""One module per source format, each a row of `gan.data.sources.FORMATS`, which says how a source of it is recognised
and opened."""


