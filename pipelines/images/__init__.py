"""Images in and out: decoding and masks, embedded metadata, saving outputs, grids."""
