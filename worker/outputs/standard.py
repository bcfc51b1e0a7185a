"""What a person or a monitoring system sees of a run (`run.assemble.Outputs`): the metrics
server, the confirmation on a terminal, the progress view and the metrics textfile, and at the
end the summary table, the Pushgateway and the --notify POST. Each library is imported only
when its output is asked for."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator
from functools import partial

import anyio

from worker.budget.base import Budget, Unlimited
from worker.errors import ExitCode
from worker.run.assemble import RunView
from worker.run.summary import Summary
from worker.settings import RunSettings


class StandardOutputs:
    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings

    @contextlib.asynccontextmanager
    async def serve(self, view: RunView) -> AsyncIterator[None]:
        if self.settings.metrics_port is None:
            yield
            return
        from worker.logs import get_logger
        from worker.outputs.metrics import MetricsServer

        host = self.settings.metrics_host
        async with MetricsServer(view, port=self.settings.metrics_port, host=host):
            get_logger().info("metrics_listening", host=host, port=self.settings.metrics_port)
            yield

    async def confirm(self, view: RunView) -> bool:
        from worker.outputs.confirm import confirm, preview, should_ask

        s = view.settings
        if not should_ask(s):
            return True
        prior = view.prior
        done = frozenset(prior.done | prior.done_names) if prior else frozenset()
        seen = await anyio.to_thread.run_sync(
            partial(preview, s.source, done, delete_monitors=s.delete_monitors, limit=s.limit)
        )
        budget: Budget = Unlimited()
        if view.session is not None:
            budget = view.session.delete_budget
            if s.precheck:  # the listing the run reads anyway: what is still connected
                listing = await view.session.directory.accounts()
                if isinstance(listing, list):
                    seen.connected(listing)
        return await anyio.to_thread.run_sync(
            partial(confirm, seen, over=s.confirm_over, budget=budget), abandon_on_cancel=True
        )

    async def watch(self, view: RunView, total: int | None, budget: Budget) -> None:
        from worker.outputs.progress import watch

        assert view.runner is not None
        async with anyio.create_task_group() as tg:
            if self.settings.metrics_textfile is not None:
                from worker.outputs.metrics import textfile_loop

                interval = self.settings.intervals.textfile
                tg.start_soon(textfile_loop, view, self.settings.metrics_textfile, interval)
            tg.start_soon(
                partial(
                    watch,
                    view.runner,
                    total=total,
                    budget=budget,
                    tty=self.settings.progress,
                    every=self.settings.intervals.progress,
                )
            )

    async def finished(self, summary: Summary, view: RunView) -> None:
        s = view.settings
        if s.progress or (sys.stderr is not None and sys.stderr.isatty()):
            from worker.outputs.progress import print_summary

            with contextlib.suppress(OSError, ValueError):
                print_summary(summary, str(s.results))
        if s.metrics_textfile is not None or s.pushgateway:
            from worker.outputs.metrics import push, write_textfile

            if summary.exit_code == ExitCode.OK:
                view.finished_ok_at = time.time()
            if s.metrics_textfile is not None:
                await write_textfile(view, s.metrics_textfile)
            if s.pushgateway:
                await push(view, s.pushgateway)
        if s.notify_url is not None:
            from worker.outputs.notify import notify

            await notify(s.notify_url, summary, str(s.results))


__all__ = ["StandardOutputs"]
