"""A cancellable background analysis: the core's ``pipeline.analyze`` in another Python process.

Pure Python (subprocess + a reader thread), so Slicer stays responsive: the module polls ``poll()`` from a
``qt.QTimer``; tests drive it without qt.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

PROGRESS_TAG = "ICHANALYZER_PROGRESS"
ERROR_TAG = "ICHANALYZER_ERROR"


WORKER_SCRIPT = Path(__file__).resolve().with_name("worker.py")


def worker_command(
    python: str,
    input_path: str | os.PathLike,
    outdir: str | os.PathLike,
    device: str = "auto",
    mask_path: str | os.PathLike | None = None,
    gcs: int | None = None,
    age: int | None = None,
) -> list[str]:
    """Command line that analyses ``input_path`` into ``outdir`` with progress lines on stdout (the worker
    script is run by path, so it needs no PYTHONPATH); ``gcs``/``age`` None: unknown."""
    command = [python, str(WORKER_SCRIPT), str(input_path), str(outdir), "--device", device]
    if mask_path:
        command += ["--mask", str(mask_path)]
    if gcs is not None:
        command += ["--gcs", str(int(gcs))]
    if age is not None:
        command += ["--age", str(int(age))]
    return command


class BackgroundJob:
    """One background process; ``poll()`` collects its progress, ``cancel()`` stops it."""

    def __init__(self, command: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.command = command
        self.workdir = Path(workdir)
        self.env = env
        self.process: subprocess.Popen | None = None
        self.fraction = 0.0
        self.step = "starting"
        self.output: list[str] = []  # every line the process printed
        self.error: str | None = None  # one-line error reported by the worker
        self.cancelled = False
        self.context: dict = {}
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        """Start the process and a thread that reads its output."""
        # on Windows: no console window popping up, and a process group that terminate() can stop
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW if os.name == "nt" else 0
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=str(self.workdir),
            text=True,
            bufsize=1,
            creationflags=flags,
            start_new_session=os.name != "nt",  # its own process group: cancel stops its children too
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def poll(self) -> bool:
        """Take in new output; True while the process runs."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                continue
            self.output.append(line)
            parts = line.split("\t")
            if parts[0] == PROGRESS_TAG and len(parts) >= 3:
                try:
                    self.fraction = float(parts[1])
                except ValueError:
                    pass
                self.step = parts[2]
            elif parts[0] == ERROR_TAG and len(parts) >= 2:
                self.error = parts[1]
        return self.running

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> int | None:
        """Poll until the process ends (for scripts and tests); returns its exit code."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if end is not None and time.monotonic() > end:
                break
            time.sleep(interval)
        if self._reader is not None:
            self._reader.join(timeout=5)
        self.poll()
        return self.returncode

    def cancel(self, grace_s: float = 3.0) -> None:
        """Stop the process (terminate, then kill); nothing it wrote is loaded."""
        self.cancelled = True
        if not self.running:
            return
        self._signal(force=False)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._signal(force=True)
            self.process.wait(timeout=grace_s)

    def _signal(self, force: bool) -> None:
        """SIGTERM (or SIGKILL) to the whole process group; TerminateProcess on Windows."""
        if os.name == "nt":
            self.process.kill()
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL if force else signal.SIGTERM)
        except ProcessLookupError:
            pass

    def error_message(self) -> str:
        """One line telling why the run failed."""
        if self.cancelled:
            return "Cancelled."
        if self.error:
            return self.error
        tail = [line for line in self.output if line.strip()][-3:]
        return f"The analysis stopped with exit code {self.returncode}: " + (" | ".join(tail) or "no output")

    def cleanup(self) -> None:
        """Remove the temporary folder (input copy and outputs)."""
        shutil.rmtree(self.workdir, ignore_errors=True)
