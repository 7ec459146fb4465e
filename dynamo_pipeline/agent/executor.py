"""Instance changes (start, stop, re-shard) handed from the agent to the serving stack.

The agent does not start model servers itself: it computes what changed on its node between the
last applied schedule and the new one (:func:`diff_instances`) and hands each change, as a JSON
object, to an executor configured per site — ``command`` (a program that gets the change on stdin),
``http`` (a POST to the serving stack's control API) or ``sim`` (records changes; tests and dry
runs). Executors run on their own worker thread so that a slow start (minutes for a 70B model)
never delays clock control. :data:`EXECUTORS` is the registry.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

from dynamo_pipeline.schedules.schema import Instance


def _spec(i: Instance) -> dict:
    return {"instance_id": i.instance_id, "tp": i.tp, "gpu_ids": list(i.gpu_ids)}


def diff_instances(old: list[Instance], new: list[Instance]) -> list[dict]:
    """Changes that turn ``old`` into ``new`` (stops first, so GPUs are free before starts)."""
    o = {i.instance_id: i for i in old}
    n = {i.instance_id: i for i in new}
    changes = [{"action": "stop", **_spec(o[k])} for k in sorted(o.keys() - n.keys())]
    for k in sorted(o.keys() & n.keys()):
        if (o[k].tp, o[k].gpu_ids) != (n[k].tp, n[k].gpu_ids):
            changes.append({"action": "reshard", **_spec(n[k]), "from_tp": o[k].tp, "from_gpu_ids": list(o[k].gpu_ids)})
    changes += [{"action": "start", **_spec(n[k])} for k in sorted(n.keys() - o.keys())]
    return changes


class SimExecutor:
    """Records every change (and appends it to ``log_path`` when given); never fails."""

    def __init__(self, log_path: str | os.PathLike | None = None, **_):
        self.done: list[dict] = []
        self.log_path = Path(log_path) if log_path else None

    def run(self, change: dict) -> None:
        self.done.append(change)
        if self.log_path:
            with self.log_path.open("a") as f:
                f.write(json.dumps(change) + "\n")


class CommandExecutor:
    """Runs ``command`` (split like a shell would, no shell) with the change as JSON on stdin."""

    def __init__(self, command: str, timeout_s: float = 900.0, **_):
        if not command:
            raise ValueError("executor=command needs agent.executor_command (the program to run)")
        self.argv = shlex.split(command)
        self.timeout_s = timeout_s

    def run(self, change: dict) -> None:
        r = subprocess.run(self.argv, input=json.dumps(change), text=True, capture_output=True, timeout=self.timeout_s)
        if r.returncode:
            raise RuntimeError(f"{self.argv[0]} exited {r.returncode}: {r.stderr.strip()[-300:]}")


class HttpExecutor:
    """POSTs the change as JSON to ``url`` (a bearer token from ``token_env`` when set)."""

    def __init__(self, url: str, token_env: str = "DYNAMO_EXECUTOR_TOKEN", timeout_s: float = 30.0, **_):
        if not url:
            raise ValueError("executor=http needs agent.executor_url (the serving stack's control API)")
        self.url, self.timeout_s = url, timeout_s
        self.token = os.environ.get(token_env)

    def run(self, change: dict) -> None:
        req = urllib.request.Request(self.url, data=json.dumps(change).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as r:  # noqa: S310 (operator-set URL)
            r.read()


EXECUTORS: dict[str, Callable[..., object]] = {"sim": SimExecutor, "command": CommandExecutor, "http": HttpExecutor}


class ExecutorWorker:
    """Runs changes one at a time on a thread; ``report(change, error_or_None)`` after each."""

    def __init__(self, executor, report: Callable[[dict, str | None], None]):
        self.executor, self.report = executor, report
        self._q: queue.Queue[dict | None] = queue.Queue()
        self._t = threading.Thread(target=self._loop, name="agent-executor", daemon=True)
        self._t.start()

    def submit(self, change: dict) -> None:
        self._q.put(change)

    def _loop(self) -> None:
        while (change := self._q.get()) is not None:
            try:
                self.executor.run(change)
                self.report(change, None)
            except Exception as e:  # noqa: BLE001 - a failing hook is reported, never fatal
                self.report(change, f"{type(e).__name__}: {e}")

    def close(self, timeout_s: float = 2.0) -> None:
        self._q.put(None)
        self._t.join(timeout_s)
