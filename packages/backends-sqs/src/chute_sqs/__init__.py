"""chute_sqs: a placeholder; it will hold the SQS queue and S3 store (issue 7). No code yet."""
