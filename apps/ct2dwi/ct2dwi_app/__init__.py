"""CT-to-DWI MONAI Label app internals (infer/train tasks, hardened datastore, server fixes)."""
