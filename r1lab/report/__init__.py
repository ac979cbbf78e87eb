"""See a run: plots (``plots``), experiment folders (``experiment``) and, later, ``report.html``."""
