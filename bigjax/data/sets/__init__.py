"""Data set definitions: each module defines `DatasetSpec`s; `bigjax.data.datasets` lists them."""
