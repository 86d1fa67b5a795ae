"""One error tree for the whole bot.

Every error a person can see derives from ``ImagebotError`` and carries a stable ``code`` and a
``message`` that is safe to show: no secrets, no raw SDK text, no stack traces.

    ImagebotError
     +-- UserError                  the request is refused; nothing changed
     |    +-- ValidationError       bad prompt, size, style, quality, count, amount, flag  (IMG-VALID-*)
     |    +-- RateLimited           per-user / per-server / concurrent-job limits         (IMG-RATE-*)
     |    +-- InsufficientCredits   balance below the price                                (IMG-CREDITS-001)
     |    +-- PermissionDenied      admin-only operation                                   (IMG-PERM-001)
     |    +-- NotFound              unknown generation, provider, account                  (IMG-NOTFOUND-*)
     |    +-- GenerationFailed      a provider error after the reservation; fully refunded (the provider's code)
     +-- ProviderError              a provider failed; the core refunds and may fail over
     |    +-- ContentRejected       policy refusal: never retried elsewhere                (IMG-PROV-POLICY)
     |    +-- ProviderRateLimited   retryable elsewhere                                    (IMG-PROV-RATE)
     |    +-- ProviderUnavailable   5xx, connection refused: retryable elsewhere           (IMG-PROV-DOWN)
     |    +-- ProviderTimeout       retryable elsewhere                                    (IMG-PROV-TIMEOUT)
     |    +-- ProviderAuthError     bad or missing key: an operator must act               (IMG-PROV-AUTH)
     |    +-- ProviderBadResponse   malformed or undecodable answer                        (IMG-PROV-BAD)
     |    +-- ProviderUnsupported   the provider cannot do this (e.g. upscale)             (IMG-PROV-UNSUPPORTED)
     |    +-- ModelRetired          the vendor no longer serves the model: dropped from the
     |                              rotation, the request fails over uncharged             (IMG-PROV-RETIRED)
     +-- ConfigError                bad configuration at start                             (IMG-CONFIG-001)
     +-- StorageError               the database refused a write                           (IMG-STORE-001)
     +-- LeaseLost                  a job outlived its reservation's lease and another process
                                    released it: nothing charged, result withheld         (IMG-LEASE-LOST)

The ledger's own refusals (``storage.ledger.LedgerRefused``: short balance, too many jobs...) carry
numbers only; ``bot.replies.refusal`` turns them into the user errors above.
"""

from __future__ import annotations


class ImagebotError(Exception):
    """Base of every error the bot raises on purpose."""

    code = "IMG-INTERNAL-001"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class UserError(ImagebotError):
    code = "IMG-USER-001"


class ValidationError(UserError):
    code = "IMG-VALID-001"


class RateLimited(UserError):
    code = "IMG-RATE-001"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(0.0, retry_after)


class InsufficientCredits(UserError):
    code = "IMG-CREDITS-001"

    def __init__(self, message: str, *, balance: int, needed: int) -> None:
        super().__init__(message)
        self.balance = balance
        self.needed = needed


class PermissionDenied(UserError):
    code = "IMG-PERM-001"


class NotFound(UserError):
    code = "IMG-NOTFOUND-001"


class GenerationFailed(UserError):
    """What the user sees when providers failed: the cause's safe message, and that nothing was charged."""

    def __init__(self, message: str, *, code: str, refunded: int, cause: ImagebotError | None = None) -> None:
        super().__init__(message, code=code)
        self.refunded = refunded
        self.cause = cause


class ProviderError(ImagebotError):
    """A provider failed. ``retryable`` says whether another provider may be tried."""

    code = "IMG-PROV-001"
    retryable = False

    def __init__(self, message: str, *, provider: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.provider = provider


class ContentRejected(ProviderError):
    code = "IMG-PROV-POLICY"


class ProviderRateLimited(ProviderError):
    code = "IMG-PROV-RATE"
    retryable = True

    def __init__(
        self, message: str, *, provider: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, provider=provider)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    code = "IMG-PROV-DOWN"
    retryable = True


class ProviderTimeout(ProviderError):
    code = "IMG-PROV-TIMEOUT"
    retryable = True


class ProviderAuthError(ProviderError):
    code = "IMG-PROV-AUTH"
    retryable = True


class ProviderBadResponse(ProviderError):
    code = "IMG-PROV-BAD"
    retryable = True


class ProviderUnsupported(ProviderError):
    code = "IMG-PROV-UNSUPPORTED"


class ModelRetired(ProviderError):
    """404 ``model_not_found`` / "no longer available": the model leaves the rotation at once."""

    code = "IMG-PROV-RETIRED"
    retryable = True

    def __init__(self, message: str, *, provider: str = "", model: str = "") -> None:
        super().__init__(message, provider=provider)
        self.model = model


class ConfigError(ImagebotError):
    code = "IMG-CONFIG-001"


class StorageError(ImagebotError):
    code = "IMG-STORE-001"


class LeaseLost(ImagebotError):
    code = "IMG-LEASE-LOST"


class LimitsUnavailable(RateLimited):
    """The limits store (Redis) is unreachable and the bot fails closed: refused before any charge."""

    code = "IMG-RATE-UNAVAILABLE"

    def __init__(self, message: str = "Rate limits can't be checked right now (the limits store is unreachable); "
                 "nothing was charged. Try again in a minute.", *, retry_after: float = 60.0) -> None:
        super().__init__(message, retry_after=retry_after)


class Interrupted(UserError):
    """A job whose process stopped after it was refunded: its user is told so, nothing more runs."""

    code = "IMG-INTERRUPTED"
