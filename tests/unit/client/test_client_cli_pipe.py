"""``hetclient ... | head``: when the reader closes the pipe early, the command ends quietly
with exit code 0, as Unix tools do, instead of a BrokenPipeError traceback."""

from __future__ import annotations

import subprocess
import sys

LONG_OUTPUT_LINES = 200_000
PROGRAM = f"""
import sys
import hetclient.cli as cli
cli.run = lambda args: "a line of output\\n" * {LONG_OUTPUT_LINES}
sys.exit(cli.main(["models", "--url", "http://127.0.0.1:9"]))
"""


def test_a_reader_that_leaves_early_ends_the_command_quietly():
    process = subprocess.Popen([sys.executable, "-c", PROGRAM], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout.readline() == b"a line of output\n"
    process.stdout.close()  # what `head -1` does after its line
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr
