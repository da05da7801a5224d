"""chute's store on Google Cloud Storage: ``--store gs://bucket/prefix`` with any queue.

The plugin module (``chute_gcs.plugin``) registers the ``gs`` scheme for the store role; see
docs/gcs.md for the object layout, the generation preconditions and retention.
"""
