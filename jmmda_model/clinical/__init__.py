"""Clinical I/O: image files and DICOM series in and out, geometry, registration, brain extraction and data-set
importers. Depends on nothing else in the package but ``jmmda_model.errors``; the model, training and serving
code depend on it, never the other way round."""
