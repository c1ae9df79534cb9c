"""One error hierarchy, so the CLI can turn any of our failures into a one-line message.

DigestError                 anything we raise on purpose; the message says what to fix
├── ConfigError             a preferences/config file is missing or malformed (names file + field)
├── DataError               an input data file (sample, benchmark folder) is malformed
├── SourceError             a paper source failed (network, bad feed); other sources go on
├── StoreError              the database cannot be opened or used
├── LeaseBusy               another daily run holds the run lease: this one does nothing
├── RenderError             one reader's digest could not be rendered: it waits for the next run
└── DeliveryError           a message could not be delivered
    ├── TransientDeliveryError   worth retrying later (4xx, refused, timeout, drop)
    │   ├── ServerUnavailable    cannot reach the server at all: the rest of the run waits too
    │   │   └── ServerNotAnswering   it stopped answering (a timeout): not tried again this run
    │   └── UnconfirmedDelivery  the message went but no answer came: it may have arrived
    ├── PermanentDeliveryError   not for this address (5xx): recorded, others go on
    └── AuthenticationError      the SMTP login failed: stops the whole run once
"""

from __future__ import annotations


class DigestError(Exception):
    """Base of every error we raise on purpose."""


class ConfigError(DigestError):
    """A config or preferences file is missing or invalid.

    One problem is one line, "file: field: what is wrong"; `ConfigError.many` gathers every problem
    of a file (one line each, `problems` lists them) so a user fixes them all in one go."""

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None):
        self.path = path
        self.field = field
        self.problems: list[ConfigError] = [self]
        where = ": ".join(p for p in (path, field) if p)
        super().__init__(f"{where}: {message}" if where else message)

    @classmethod
    def many(cls, problems: list[ConfigError]) -> ConfigError:
        """One error for several problems: the first one's path and field, every problem a line."""
        unique = list({str(p): p for p in problems}.values())
        if len(unique) == 1:
            return unique[0]
        error = cls("\n".join(str(p) for p in unique))
        error.path, error.field, error.problems = unique[0].path, unique[0].field, unique
        return error


class DataError(DigestError):
    """An input data file is malformed."""


class SourceError(DigestError):
    """A paper source could not be read."""


class StoreError(DigestError):
    """The database could not be opened or used."""


class RenderError(DigestError):
    """A digest could not be rendered (a template fault or text no renderer takes); only that reader waits."""


class DeliveryError(DigestError):
    """A digest could not be delivered."""


class TransientDeliveryError(DeliveryError):
    """A delivery failure worth retrying (temporary SMTP error, refused connection, timeout)."""


class ServerUnavailable(TransientDeliveryError):
    """The mail server cannot be reached (refused, timed out); no other message would get through now."""


class ServerNotAnswering(ServerUnavailable):
    """The server stopped answering within the timeout: each further try would cost as long, so the
    rest of the run waits for the next one."""


class UnconfirmedDelivery(TransientDeliveryError):
    """The whole message was sent but the server's answer never came (a timeout after DATA): it may
    have been delivered, so it is not sent again in this run."""


class PermanentDeliveryError(DeliveryError):
    """A delivery failure that retrying will not fix for this address."""


class AuthenticationError(DeliveryError):
    """The SMTP server refused our credentials; no message of this run can be sent."""


class LeaseBusy(DigestError):
    """Another daily run holds the run lease (`digest.db.RunLease`)."""
