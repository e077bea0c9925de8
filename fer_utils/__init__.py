"""fer_utils: the library behind the FER2013 reproduction notebooks.

One module per pipeline stage: ``config`` (classes, profiles, paths), ``data`` (loading,
fingerprint, duplicates), ``synthetic`` (the stand-in dataset), ``plots`` (figures),
``notebook`` (the shared set-up every notebook calls), ``pipeline`` (runs notebooks with papermill).
"""

__version__ = "0.1.0"
