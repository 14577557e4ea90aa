"""Exception types raised by the library; the CLI turns them into one clean message."""

from __future__ import annotations

from dataclasses import dataclass


class OtapubError(Exception):
    """A user-facing error: its message is printed as is, without a traceback."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One validation finding, located in a source file."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class ValidationError(OtapubError):
    """One or more problems found while validating a fleet; all are reported at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        count = len(self.problems)
        lines = [str(p) for p in self.problems]
        lines.append(f"{count} problem{'s' if count != 1 else ''} found; nothing was written")
        super().__init__("\n".join(lines))
