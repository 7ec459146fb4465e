"""`python -m dynamo_pipeline` is the `dynamo` command."""

from dynamo_pipeline.cli import main

main()
