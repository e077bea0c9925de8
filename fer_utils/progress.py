"""Progress bars that suit where the code runs.

``tqdm.auto`` draws a Jupyter widget inside any kernel, including the kernels papermill starts for
``fer_utils.pipeline``; the executed copies then keep those widgets frozen at 0% (their state is
never saved). :func:`tqdm` draws plain-text bars in such batch runs (the pipeline sets
``$FER_BATCH_RUN``) and defers to ``tqdm.auto`` elsewhere: widgets in an interactive notebook,
text in a terminal.
"""

from __future__ import annotations

import os

#: Set by ``fer_utils.pipeline`` in the kernels it starts: a notebook run by papermill, nobody watching.
BATCH_RUN_ENV = "FER_BATCH_RUN"


def batch_run() -> bool:
    """True inside a notebook executed by the pipeline (papermill), where no widget can update."""
    return bool(os.environ.get(BATCH_RUN_ENV))


def tqdm(*args, **kwargs):
    """A ``tqdm`` bar: plain text in batch runs (see :func:`batch_run`), ``tqdm.auto`` otherwise.

    In batch runs a transient bar (``leave=False``, typically nested inside another) is not drawn:
    plain text cannot erase it, and its cursor moves would garble the outer bar's line.
    """
    if batch_run():
        from tqdm.std import tqdm as bar

        if kwargs.get("leave") is False:
            kwargs["disable"] = True
    else:
        from tqdm.auto import tqdm as bar
    return bar(*args, **kwargs)
