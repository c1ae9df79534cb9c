"""digest: a personalised research-paper digest, emailed daily at each reader's hour.

The pipeline, one module (or package) per stage:
sources -> store -> features -> rank -> render -> deliver, driven by pipeline.run_daily and
scheduled by schedule; cli sits on top.
"""

__version__ = "0.1.0"
