"""One module per model family; each defines `MODELS` (name -> (class, defaults)).

The registry (`bigjax.registry.FAMILIES`) imports them by name; importing this package
imports none of them.
"""
