"""The first converge of two checkouts of this project, interleaved on one harness.

    uv run python -m bench.ab /path/to/other/checkout [--reps 4]

The machine's speed drifts (on the 2-core CI machine, by half within an hour), so two
``python -m bench`` runs minutes apart do not compare two versions of the code. Here
the runs alternate (ABBA order) on one harness: the same sshd, launchctl double,
upstream and warm uv cache; each run is the real pyinfra CLI running
``deploys/devpi.py`` from that checkout onto an empty home. The harness (and so the
launchctl double) is this checkout's. Prints, per checkout, the time to healthy (the
end of the health wait), the whole run, and the median of each step; writes the samples
to ``bench/results/ab-<UTC time>.json``. Everything it starts listens on 127.0.0.1 and
is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path

from bench.run import CACHE, RESULTS, ensure_wheels, log, median, phases, start_env, to_healthy
from tests.e2e import harness as h
from tests.e2e.harness.common import REPO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="another checkout of this project (e.g. a git worktree)")
    parser.add_argument("--reps", type=int, default=4, help="runs per checkout (default 4)")
    args = parser.parse_args(argv)
    checkouts = {"this": REPO, "other": args.other.resolve()}
    if not (checkouts["other"] / "deploys" / "devpi.py").is_file():
        parser.error(f"{args.other} is not a checkout of this project (no deploys/devpi.py)")
    tools = h.find_tools()
    wheels = ensure_wheels(tools)
    (CACHE / "runs").mkdir(parents=True, exist_ok=True)
    env = start_env(Path(tempfile.mkdtemp(prefix="ab-", dir=CACHE / "runs")), wheels, tools)
    samples: dict[str, list[dict]] = {name: [] for name in checkouts}
    try:
        env.stack("ab-warmup").stop()  # uv's cache warm for both
        for i in range(args.reps):
            for name in (checkouts if i % 2 == 0 else reversed(list(checkouts))):
                stack = env.stack(f"ab-{name}{i}", deploy=False)
                run = h.run_pyinfra(stack.write_inventory(), "deploys/devpi.py", cwd=checkouts[name],
                                    env_extra=stack.env_extra, check=False)
                if run.returncode != 0:
                    raise h.HarnessError(f"{name} ({checkouts[name]}) failed:\n{run.output[-3000:]}")
                stack.wait_healthy()
                sample = {"wall_s": run.duration, "phases": phases(run)}
                sample["to_healthy_s"] = to_healthy(sample)
                samples[name].append(sample)
                log(f"{name} {i}: to healthy {sample['to_healthy_s']:.2f}s, run {run.duration:.2f}s")
                stack.stop()
    finally:
        env.close()
    for name, runs in samples.items():
        print(f"\n{name} ({checkouts[name]}): to healthy {median([r['to_healthy_s'] for r in runs]):.2f}s "
              f"(min {min(r['to_healthy_s'] for r in runs):.2f}s), whole run {median([r['wall_s'] for r in runs]):.2f}s")
        steps: dict[str, list[float]] = {}
        for run in runs:
            for label, seconds in run["phases"]:
                steps.setdefault(label.removeprefix("Starting operation: "), []).append(seconds)
        for label, seconds in steps.items():
            if len(seconds) == len(runs) and median(seconds) >= 0.05:
                print(f"  {median(seconds):6.2f}s  {label}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"ab-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps({"checkouts": {k: str(v) for k, v in checkouts.items()}, "samples": samples}, indent=1))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
