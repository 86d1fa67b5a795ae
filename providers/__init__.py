"""Image and text providers behind one small interface (see ``providers.base``)."""
