"""One module per dataset layout; each reader lists a dataset's images with their classes
(`guie_nb.data.sources.READERS` maps the `kind` of a `sources` entry to its reader)."""
