"""Long steps report progress at pyinfra's default verbosity (``ProgressCommand``)."""

from types import SimpleNamespace

import pytest
from pyinfra.connectors.util import CommandOutput, OutputLine

from operations.announce import ProgressCommand, progress


class RecordingHost:
    def __init__(self, status=True):
        self.status, self.calls = status, []

    def run_shell_command(self, command, **kwargs):
        self.calls.append(kwargs)
        return self.status, CommandOutput([OutputLine("stdout", "prewarm 1/2: a (1 files)")])


@pytest.mark.parametrize("verbose", [False, True])
def test_the_output_is_printed_as_it_arrives_at_any_verbosity(verbose):
    host = RecordingHost(status=False)
    state = SimpleNamespace(print_output=verbose, print_input=False)
    status, output = ProgressCommand("true").execute(state, host, {"_timeout": 5})
    assert host.calls == [{"print_output": True, "print_input": False, "_timeout": 5}]
    assert status is False
    # pyinfra prints a failed command's output again unless it printed it itself: the
    # lines were printed as they came, so they are not handed back to be printed twice
    assert output.output_lines == (["prewarm 1/2: a (1 files)"] if verbose else [])


def test_a_progress_line_is_one_quoted_printf_to_stdout():
    assert progress("venv: %s is live", '"$new"') == "printf 'venv: %s is live\n' \"$new\""
    assert ">&2" not in progress("x")


def test_the_long_steps_are_progress_commands():
    from operations import devpi, prewarm, search
    from pyinfra_devpi.config import build_config
    from pyinfra_devpi.render import render_server_yaml
    from pyinfra_devpi.search import NULL, WHOOSH, SearchPlan

    from pyinfra.context import ctx_host, ctx_state

    from .prepared import Meta, PreparedHost, prepared_state

    config = build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_root_password": "env:PW",
                           "devpi_prewarm": ["a", "b"]}, "/Users/alice")
    host = PreparedHost(server_dir={"exists": False, "is_dir": False, "has_data": False, "initialised": False,
                                    "secret_file": {"exists": False}})

    def last(op, **kwargs):
        with ctx_host.use(host), ctx_state.use(prepared_state()):
            return list(op._inner(**kwargs))[-1]

    assert isinstance(last(devpi.venv, config=config), ProgressCommand)
    assert isinstance(last(devpi.init, config=config, password_hash=lambda: SimpleNamespace(unmask=lambda: "h")),
                      ProgressCommand)
    assert isinstance(last(devpi.wait_healthy, config=config, after=[Meta(True)]), ProgressCommand)
    assert isinstance(last(prewarm.projects, config=config, server_dir=host.server_dir), ProgressCommand)
    assert isinstance(last(search.switch_on, config=config, plan=SearchPlan(NULL, switch_on=True),
                           content=render_server_yaml(config, WHOOSH), written=render_server_yaml(config, NULL),
                           target="gui/501/net.devpi"), ProgressCommand)


def test_a_value_with_a_percent_sign_is_printed_as_it_is():
    import subprocess

    from operations.devpi import build_venv_script
    from pyinfra_devpi.config import build_config

    config = build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_python": "/opt/py%n%s/python3"},
                          "/Users/alice")
    script = build_venv_script(config, "x")
    lines = script.splitlines()
    python = next(line for line in lines if line.startswith("python="))  # the value, as the script gets it
    printed = next(line for line in lines if line.startswith("printf 'venv: creating"))
    out = subprocess.run(["/bin/sh", "-c", f"new=/v/devpi-1; {python}\n{printed}"], capture_output=True, text=True,
                         check=True)
    assert out.stdout == "venv: creating devpi-1 with Python /opt/py%n%s/python3 (uv)\n"
