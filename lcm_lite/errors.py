"""The errors lcm-lite raises on purpose, each with the exit code the CLI uses for it.

Anything that reaches a user as a failure is one of these: a one-line message that says what is
wrong and what to do, never a traceback.
"""

from __future__ import annotations


class LcmLiteError(Exception):
    """Base class: ``str(error)`` is the one-line message, ``exit_code`` the CLI's exit status."""

    exit_code = 1


class UsageError(LcmLiteError, ValueError):
    """A parameter is out of range or of the wrong kind (exit code 2)."""

    exit_code = 2


class ModelError(LcmLiteError):
    """The model folder is missing, incomplete, corrupt or not an LCM (exit code 3)."""

    exit_code = 3


class DeviceError(LcmLiteError):
    """OpenVINO cannot use the requested device, or compiling for it failed (exit code 4)."""

    exit_code = 4


class OutputError(LcmLiteError):
    """An image could not be written: folder not writable, disk full (exit code 5)."""

    exit_code = 5


class Cancelled(LcmLiteError):
    """A step callback asked to stop, or the run was interrupted (exit code 130)."""

    exit_code = 130
