"""chute's queue on Amazon SQS and store on Amazon S3 (aiobotocore):
``--queue sqs://<queue-prefix>?region=… --store s3://<bucket>/<prefix>?region=…``.

The plugin module (``chute_sqs.plugin``) registers the ``sqs`` and ``s3`` schemes; see
docs/sqs.md for the layout, the concurrency-safety design, retention and limits.
"""
