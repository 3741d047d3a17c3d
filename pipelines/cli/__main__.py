"""`python -m pipelines.cli`: the same as the `gan-pipeline` command."""

from pipelines.cli.main import main

main()
