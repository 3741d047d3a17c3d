"""Scheduled runs: the flow served as a Prefect deployment on a cron schedule, one run at a time.

`flow.serve` registers the deployment and runs each of its flow runs in a subprocess of the serving process, so no
work pool or worker is needed; the Prefect server's scheduler creates the runs. Imported by the CLI only, after
`configure_environment`.
"""

import asyncio
import re
from datetime import datetime

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron
from prefect.server.schemas.schedules import CronSchedule
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from prefect.types.entrypoint import EntrypointType
from pydantic import ValidationError

from pipelines.config import PipelineConfig
from pipelines.errors import UsageError

DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
# At most one run of the deployment at a time; a run that comes due while one is running waits for its end
# (Prefect's AwaitingConcurrencySlot state). Two runs of one config would share a Ray Train run folder.
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def next_run(cron: str, timezone: str) -> datetime:
    """When the schedule fires next, as the Prefect server computes it; a UsageError for a bad cron or time zone."""
    try:
        schedule = CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as err:
        # 'Invalid cron string: "0 2 * *"' or 'Invalid timezone: "Mars" (specify in IANA tzdata format, ...)'
        message = err.errors()[0]["msg"].removeprefix("Value error, ")
        hint = ' (five fields: minute hour day-of-month month day-of-week, e.g. "0 2 * * *")' if "cron" in message else ""
        raise UsageError(f"schedule: {message}{hint}") from None
    return asyncio.run(schedule.get_dates(n=1))[0]


def check_name(name: str) -> None:
    if not DEPLOYMENT_NAME.match(name):
        raise UsageError(f"schedule --name {name!r}: use letters, digits, '.', '_' and '-' only")


def api_url() -> str:
    """The Prefect server to serve on. Without PREFECT_API_URL, Prefect would start a temporary server inside this
    process, which runs no scheduler: cron runs would never be created."""
    url = PREFECT_API_URL.value()
    if not url:
        raise UsageError(
            "schedule needs a Prefect server, and PREFECT_API_URL is not set (a temporary server has no scheduler): "
            "start one with `prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    with get_client(sync_client=True) as client:
        failure = client.api_healthcheck()
    if failure is not None:
        raise UsageError(f"schedule: the Prefect API at {url} does not answer ({failure}); is `prefect server start` running?")
    return url


def ui_url() -> str | None:
    return PREFECT_UI_URL.value()


def serve(cfg: PipelineConfig, name: str, cron: str, timezone: str) -> None:
    """Register deployment gan-pipeline/NAME with this config and schedule, then run its flow runs until SIGTERM or
    Ctrl-C; on the way out Prefect pauses the schedule, so no runs pile up while nothing serves them."""
    from pipelines.flow import gan_pipeline  # noqa: PLC0415 - the stages' imports (torch, Ray) only once the checks passed

    gan_pipeline.serve(
        name=name,
        schedule=Cron(cron, timezone=timezone),
        parameters={"config": cfg.model_dump(mode="json")},
        global_limit=ONE_AT_A_TIME,
        description=f"gan-pipeline schedule --cron {cron!r} --timezone {timezone}",
        tags=["gan-pipeline", "scheduled"],
        # The flow by module path: runs import it wherever the package is installed, whatever the current folder.
        entrypoint_type=EntrypointType.MODULE_PATH,
        print_starting_message=False,  # the CLI says what it serves
    )
