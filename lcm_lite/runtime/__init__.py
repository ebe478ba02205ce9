"""OpenVINO itself: the ``Core``, device names and compiling (``compiler``), and the cache of
compiled networks between processes (``blob_cache``)."""
