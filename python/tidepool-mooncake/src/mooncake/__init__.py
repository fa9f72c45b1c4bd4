"""Tidepool's drop-in for Mooncake Store's Python package (contract §1.1).

Install instead of Mooncake, never beside it. ``mooncake.store`` re-exports Tidepool's
implementation under Mooncake's names; the console scripts run the ``tidepool`` binary.
"""
