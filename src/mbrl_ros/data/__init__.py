"""Data (pure core, no rclpy): rosbag2 bags, (s, a, s') transitions and datasets.

* ``topics``: the graph's topic names and message types, episode events.
* ``transitions``: ``TransitionBuilder``, one implementation for live message streams and bags.
* ``dataset``: ``Dataset`` (episodes, split, normalisation statistics, safetensors files).
* ``features``: end-effector features appended to the state.
* ``mcap_files`` / ``bags``: writing (split, flush, disk-full rollback), reading, info, repair.
* ``extract``: datasets from bags. ``cli``: ``mbrl-ros bag info|repair`` and ``mbrl-ros dataset``.
"""
