"""Datasets: the toy sort task, JSON-lines files, any table ``datasets.load_dataset`` reads."""
