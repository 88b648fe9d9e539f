"""The runnable graphs: which nodes, parameters and remappings each graph has (``description``),
and the two ways to start one: ``mbrl-ros launch`` (``launcher``, ``commands``) and ``ros2
launch`` (``launch_support``); parameter files keyed for any namespace (``param_files``)."""
