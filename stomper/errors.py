"""Errors the user can fix, each with a message that says how.

```
StomperError                    exit 2 unless said otherwise
├── ConfigError                 a bad flag, environment variable or [tool.stomper] value
├── RepositoryError             not a repository, no commits, an operation in progress, ...
├── ToolError                   a collector's tool is missing or failed to run
├── AgentError                  the agent is unknown or cannot start
└── RunLockedError              another run holds the repository
```

Anything else that escapes is a bug: the CLI prints where its log is and exits 3.
"""

from __future__ import annotations


class StomperError(Exception):
    """Something the user can fix; the message says what to do."""

    exit_code = 2


class ConfigError(StomperError):
    """An invalid flag, environment variable or configuration value."""


class RepositoryError(StomperError):
    """The repository is not in a state stomper can work on."""


class ToolError(StomperError):
    """A diagnostics tool is missing or could not run."""


class AgentError(StomperError):
    """The agent is unknown or cannot start."""


class RunLockedError(StomperError):
    """Another live run holds the repository."""
