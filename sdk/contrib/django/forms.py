"""The admin page's forms: validated by Django, with the same limits as the telemetry store."""

from __future__ import annotations

from django import forms

from ...telemetry._record import MAX_CORRECTION_SECONDS, VERDICTS


class CorrectionForm(forms.Form):
    """A person's correction time and verdict for one request (what ``report_correction`` takes)."""

    seconds = forms.FloatField(
        min_value=0,
        max_value=MAX_CORRECTION_SECONDS,
        help_text="Time a person spent fixing the image, 0 to 86400 (one day).",
    )
    verdict = forms.ChoiceField(choices=[(v, v) for v in VERDICTS])


class RecentRequestsForm(forms.Form):
    """``?limit=N`` on the list page; a bounded page keeps the store query cheap."""

    limit = forms.IntegerField(min_value=1, max_value=500, required=False)

    def limit_or(self, default: int) -> int:
        if not self.is_valid():
            return default
        value = self.cleaned_data.get("limit")
        return int(value) if value is not None else default
