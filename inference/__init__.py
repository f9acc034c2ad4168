"""From pixels to scores: normalisation, quality gate, model registry, classifiers, heatmaps."""
