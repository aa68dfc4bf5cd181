"""Thread workers of the napari widget: long work off the GUI thread, results handed back through signals.

Nothing here touches the viewer; the widget does that in the slots connected to ``yielded``, ``returned``
and ``finished``, which Qt runs on the main thread.
"""
