"""chute_gcs: a placeholder; it will hold the GCS store (issue 8). No code yet."""
