"""`gan-pipeline`: the whole flow, or one stage at a time with the same task code; the registry's commands; comparisons
and schedules. `app.py` holds the Typer app and what every command shares, each other module a group of commands, and
`main.py` the entry point with every command registered."""
