"""The controller-side ``op`` double (``tests/e2e/fakes/op``)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .common import CONTROLLER_FAKES_DIR


@dataclasses.dataclass
class FakeOp:
    """Controller-side ``op`` double: ``op read op://...`` prints ``password``.

    Pass ``fake_op.env`` as ``run_pyinfra(..., env_extra=fake_op.env)``; ``calls()`` lists
    the argv of every invocation; ``fail()`` makes the next calls fail like 1Password does
    for a missing item.
    """

    log_path: Path
    password: str
    failing: bool = False
    secrets: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.pathsep.join([str(CONTROLLER_FAKES_DIR), os.environ.get("PATH", "")]),
            "FAKE_OP_PASSWORD": self.password,
            "FAKE_OP_LOG": str(self.log_path),
            "FAKE_OP_FAIL": "1" if self.failing else "0",
        }
        if self.secrets:
            env["FAKE_OP_SECRETS"] = json.dumps(self.secrets)
        return env

    def fail(self, failing: bool = True) -> None:
        self.failing = failing

    def calls(self) -> list[list[str]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line)["argv"] for line in self.log_path.read_text().splitlines() if line.strip()]
