"""Training pipeline: data, augmentation, architectures, training, evaluation, export, model cards."""
