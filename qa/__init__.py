"""Speech quality inspection (语音质检) for Chinese financial call centers."""

__version__ = "0.1.0"
