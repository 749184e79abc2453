"""API rate limits, read from REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].

DRF's throttles copy the rates when they are imported; these read them on each
request, so a changed setting (in tests, for example) takes effect.
"""

from rest_framework import throttling
from rest_framework.settings import api_settings


class CurrentRatesMixin:
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserRateThrottle(CurrentRatesMixin, throttling.UserRateThrottle):
    """Requests per authenticated user; anonymous requests per client address."""


class AnonRateThrottle(CurrentRatesMixin, throttling.AnonRateThrottle):
    """Requests without a user, per client address."""


class LoginRateThrottle(CurrentRatesMixin, throttling.AnonRateThrottle):
    """Token requests per client address, successful or not."""

    scope = "login"
